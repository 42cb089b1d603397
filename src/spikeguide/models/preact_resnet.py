"""Pre-activation spiking ResNet-34 as the rate-BP paper's official code trains it on ImageNet
(``model/preact_resnet.py`` of Tab-ct/rate-based-backpropagation).

A block's branch is activation-conv-BN-activation-conv-BN; its shortcut (identity, or a strided
1x1 conv-BN) takes the block's input as it is, and no activation follows the sum. So the SNN's
neurons sit only inside the branches, and what flows from block to block (and into the global
pooling) is the real-valued sum of batch-normalised currents. Stem: 7x7/2 convolution (with bias),
BN and 3x3/2 max pooling, without an activation. Convolutions start with Kaiming normal weights.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import SpikingNet
from .layers import TimeSequential
from .registry import register_model
from .resnet import MakeAct, ResidualBlock, build_stages, conv_bn, global_pool, numbered, scale
from .sew_resnet import kaiming_init


class PreActBlock(ResidualBlock):
    """``branch(x) + shortcut(x)`` with the activations at the start of each branch layer;
    ``act`` (the identity) marks that no activation follows the sum."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, make_act: MakeAct):
        super().__init__()
        self.residual = TimeSequential(OrderedDict(
            [("act1", make_act())] + numbered(conv_bn(cin, planes, 3, stride, bias=True), 1)
            + [("act2", make_act())] + numbered(conv_bn(planes, planes, 3, 1, bias=True), 2)
        ))
        self.shortcut = nn.Identity() if stride == 1 and cin == planes else \
            TimeSequential(OrderedDict(conv_bn(cin, planes, 1, stride, bias=True)))
        self.act = nn.Identity()


@register_model("preact_resnet34")
def preact_resnet34(*, num_classes: int, in_channels: int, make_act: MakeAct, width: float, T: int,
                    spiking: bool) -> SpikingNet:
    """Pre-activation ResNet-34: blocks [3, 4, 6, 3] at 64/128/256/512 (module docstring)."""
    cin = scale(64, width)
    encoder = nn.Sequential(OrderedDict(conv_bn(in_channels, cin, 7, 2, bias=True)))
    stem = TimeSequential(OrderedDict(pool=nn.MaxPool2d(3, 2, 1)))
    stages, channels = build_stages(PreActBlock, [3, 4, 6, 3], [64, 128, 256, 512], cin, make_act,
                                    width)
    model = SpikingNet(encoder, stem, stages, global_pool(), nn.Linear(channels[-1], num_classes),
                       T, spiking, channels)
    kaiming_init(model)
    return model
