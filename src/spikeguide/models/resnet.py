"""Spiking (and ANN twin) ResNets: resnet19, resnet20, resnet18, resnet34, resnet50.

Blocks follow the spiking ResNet used by TET and EnOF: conv-BN-activation inside the residual
branch and an activation after the addition, so every activation sees a batch-normalized input
current. The activation factory decides whether the network is an ANN (ReLU) or an SNN (LIF).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from torch import nn

from ..errors import SpikeguideError
from .base import SpikingNet
from .layers import TimeSequential
from .registry import register_model

MakeAct = Callable[[], nn.Module]


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> list[tuple[str, nn.Module]]:
    return [
        ("conv", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)),
        ("bn", nn.BatchNorm2d(cout)),
    ]


def numbered(layers: list[tuple[str, nn.Module]], index: int) -> list[tuple[str, nn.Module]]:
    return [(f"{name}{index}", module) for name, module in layers]


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return TimeSequential(OrderedDict(conv_bn(cin, cout, 1, stride)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, make_act: MakeAct):
        super().__init__()
        self.residual = TimeSequential(OrderedDict(
            numbered(conv_bn(cin, planes, 3, stride), 1)
            + [("act1", make_act())]
            + numbered(conv_bn(planes, planes, 3), 2)
        ))
        self.shortcut = shortcut(cin, planes, stride)
        self.act = make_act()

    def forward(self, x):
        return self.act(self.residual(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, make_act: MakeAct):
        super().__init__()
        cout = planes * self.expansion
        self.residual = TimeSequential(OrderedDict(
            numbered(conv_bn(cin, planes, 1), 1)
            + [("act1", make_act())]
            + numbered(conv_bn(planes, planes, 3, stride), 2)
            + [("act2", make_act())]
            + numbered(conv_bn(planes, cout, 1), 3)
        ))
        self.shortcut = shortcut(cin, cout, stride)
        self.act = make_act()

    def forward(self, x):
        return self.act(self.residual(x) + self.shortcut(x))


def scale(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def build_stem(kind: str, in_channels: int, channels: int, make_act: MakeAct):
    """(encoder, stem) for a stem kind: the encoder is the first conv+BN, the stem the rest."""
    encoder = nn.Sequential(OrderedDict(conv_bn(in_channels, channels, 7 if kind == "imagenet" else 3,
                                                2 if kind == "imagenet" else 1)))
    rest: list[tuple[str, nn.Module]] = [("act1", make_act())]
    if kind == "imagenet":
        rest.append(("pool", nn.MaxPool2d(3, 2, 1)))
    elif kind == "enof":  # three 3x3 convolutions, then a 2x2 average pool
        for i in (2, 3):
            rest += numbered(conv_bn(channels, channels, 3), i) + [(f"act{i}", make_act())]
        rest.append(("pool", nn.AvgPool2d(2)))
    elif kind != "cifar":
        raise SpikeguideError(f"unknown stem {kind!r}; choose 'cifar', 'imagenet' or 'enof'")
    return encoder, TimeSequential(OrderedDict(rest))


def build_resnet(block, blocks: list[int], channels: list[int], stem: str, stem_channels: int, *,
                 num_classes: int, in_channels: int, make_act: MakeAct, width: float, T: int,
                 spiking: bool) -> SpikingNet:
    cin = scale(stem_channels, width)
    encoder, stem_layers = build_stem(stem, in_channels, cin, make_act)
    stages = nn.ModuleList()
    for i, (n, planes) in enumerate(zip(blocks, channels)):
        planes = scale(planes, width)
        layers = []
        for j in range(n):
            layers.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1, make_act))
            cin = planes * block.expansion
        stages.append(nn.Sequential(*layers))
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return SpikingNet(encoder, stem_layers, stages, pool, nn.Linear(cin, num_classes), T, spiking)


@register_model("resnet20")
def resnet20(**kw) -> SpikingNet:
    """The ResNet-20 of the SNN literature used by EnOF: a stem of three 3x3 convolutions with 64
    channels and a 2x2 average pool, BasicBlocks [2, 2, 2, 2] at 64/128/256/512 channels."""
    return build_resnet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], "enof", 64, **kw)


@register_model("resnet19")
def resnet19(**kw) -> SpikingNet:
    """ResNet-19 (TET, EnOF): a 3x3 stem with 128 channels, BasicBlocks [3, 3, 2] at 128/256/512."""
    return build_resnet(BasicBlock, [3, 3, 2], [128, 256, 512], "cifar", 128, **kw)


@register_model("resnet18")
def resnet18(stem: str = "imagenet", **kw) -> SpikingNet:
    """ResNet-18; ``stem="imagenet"`` (7x7/2 conv + 3x3/2 max pool) or ``"cifar"`` (3x3/1 conv)."""
    return build_resnet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], stem, 64, **kw)


@register_model("resnet34")
def resnet34(stem: str = "imagenet", **kw) -> SpikingNet:
    """ResNet-34; stems as for resnet18."""
    return build_resnet(BasicBlock, [3, 4, 6, 3], [64, 128, 256, 512], stem, 64, **kw)


@register_model("resnet50")
def resnet50(stem: str = "imagenet", **kw) -> SpikingNet:
    """ResNet-50 with bottleneck blocks (output 2048 channels at width 1); stems as for resnet18."""
    return build_resnet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], stem, 64, **kw)
