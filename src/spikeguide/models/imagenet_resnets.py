"""The two ResNet-34 variants the rate-BP paper's official code trains on ImageNet
(``model/sew_resnet.py`` and ``model/preact_resnet.py`` of Tab-ct/rate-based-backpropagation).

Both have a 7x7/2 convolution (with bias) and BN as encoder, 3x3/2 max pooling in the stem,
blocks [3, 4, 6, 3] at 64/128/256/512 channels whose sum is not followed by an activation, global
average pooling and one linear layer; every convolution has a bias and starts with Kaiming normal
weights (fan out), as in the official code.

* ``sew_resnet34`` (SEW ResNet, Fang et al. 2021): every convolution, the downsampling shortcut's
  included, is followed by BN and an activation; a block adds its branch's output to its
  shortcut's (SEW's ADD connection), so in the SNN blocks pass on spike counts rather than spikes.
  The stem has an activation before the max pooling.
* ``preact_resnet34``: a block's branch is activation-conv-BN-activation-conv-BN and its shortcut
  (identity, or a strided 1x1 conv-BN) takes the block's input as it is; the stem has no
  activation. The SNN's neurons sit only inside the branches, and what flows from block to block
  (and into the pooling) is the real-valued sum of batch-normalised currents.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import SpikingNet
from .layers import TimeSequential
from .registry import register_model
from .resnet import MakeAct, ResidualBlock, build_stages, conv_bn, global_pool, numbered, scale


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int, make_act: MakeAct,
                index: int) -> list[tuple[str, nn.Module]]:
    layers = numbered(conv_bn(cin, cout, kernel, stride, bias=True), index)
    return layers + [(f"act{index}", make_act())]


class SEWBlock(ResidualBlock):
    """Two conv-BN-activation layers, an identity or strided 1x1 conv-BN-activation shortcut,
    nothing after the sum (``act`` is the identity)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, make_act: MakeAct):
        super().__init__()
        self.residual = TimeSequential(OrderedDict(
            conv_bn_act(cin, planes, 3, stride, make_act, 1)
            + conv_bn_act(planes, planes, 3, 1, make_act, 2)
        ))
        self.shortcut = nn.Identity() if stride == 1 and cin == planes else \
            TimeSequential(OrderedDict(conv_bn_act(cin, planes, 1, stride, make_act, 1)))
        self.act = nn.Identity()


class PreActBlock(ResidualBlock):
    """Activation-conv-BN twice, an identity or strided 1x1 conv-BN shortcut on the block's
    input, nothing after the sum (``act`` is the identity)."""

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


def build_resnet34_variant(block: type[ResidualBlock], stem: list[tuple[str, nn.Module]], *,
                           num_classes: int, in_channels: int, make_act: MakeAct, width: float,
                           T: int, spiking: bool) -> SpikingNet:
    cin = scale(64, width)
    encoder = nn.Sequential(OrderedDict(conv_bn(in_channels, cin, 7, 2, bias=True)))
    stages, channels = build_stages(block, [3, 4, 6, 3], [64, 128, 256, 512], cin, make_act, width)
    model = SpikingNet(encoder, TimeSequential(OrderedDict(stem)), stages, global_pool(),
                       nn.Linear(channels[-1], num_classes), T, spiking, channels)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


@register_model("sew_resnet34")
def sew_resnet34(*, make_act: MakeAct, **kw) -> SpikingNet:
    """SEW ResNet-34 (module docstring)."""
    stem = [("act1", make_act()), ("pool", nn.MaxPool2d(3, 2, 1))]
    return build_resnet34_variant(SEWBlock, stem, make_act=make_act, **kw)


@register_model("preact_resnet34")
def preact_resnet34(**kw) -> SpikingNet:
    """Pre-activation spiking ResNet-34 (module docstring)."""
    return build_resnet34_variant(PreActBlock, [("pool", nn.MaxPool2d(3, 2, 1))], **kw)
