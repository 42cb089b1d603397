"""SEW ResNet-34 (Fang et al. 2021) as the rate-BP paper's official code trains it on ImageNet
(``model/sew_resnet.py`` of Tab-ct/rate-based-backpropagation).

Every convolution (with bias) is followed by batch norm and an activation, the downsampling
shortcut included; a block adds its branch's output to its shortcut's (SEW's ADD connection) with
no activation after the sum, so in the SNN a block passes on spike counts rather than spikes.
Stem: 7x7/2 convolution, BN, activation, 3x3/2 max pooling. Convolutions start with Kaiming
normal weights (fan out), as in the official code.
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
    """``branch(x) + shortcut(x)``: two conv-BN-activation layers, and an identity or a strided
    1x1 conv-BN-activation shortcut. ``act`` (the identity) marks that no activation follows the
    sum."""

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


def kaiming_init(model: nn.Module) -> None:
    """Kaiming normal (fan out, ReLU gain) convolution weights, as the official ImageNet models;
    biases and BN keep PyTorch's initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


@register_model("sew_resnet34")
def sew_resnet34(*, num_classes: int, in_channels: int, make_act: MakeAct, width: float, T: int,
                 spiking: bool) -> SpikingNet:
    """SEW ResNet-34: SEW blocks [3, 4, 6, 3] at 64/128/256/512 channels (module docstring)."""
    cin = scale(64, width)
    encoder = nn.Sequential(OrderedDict(conv_bn(in_channels, cin, 7, 2, bias=True)))
    stem = TimeSequential(OrderedDict(act1=make_act(), pool=nn.MaxPool2d(3, 2, 1)))
    stages, channels = build_stages(SEWBlock, [3, 4, 6, 3], [64, 128, 256, 512], cin, make_act,
                                    width)
    model = SpikingNet(encoder, stem, stages, global_pool(), nn.Linear(channels[-1], num_classes),
                       T, spiking, channels)
    kaiming_init(model)
    return model
