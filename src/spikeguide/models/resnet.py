"""Spiking (and ANN twin) ResNets: resnet19, resnet20, resnet18, resnet34, resnet50.

Blocks follow the spiking ResNet used by TET, EnOF and the rate-BP paper: conv-BN-activation
inside the residual branch and an activation after the addition, so every activation sees a
batch-normalized input current. The activation factory decides whether the network is an ANN
(ReLU) or an SNN (LIF). The SEW and pre-activation ResNet-34 are in :mod:`.imagenet_resnets`.
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


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1,
            bias: bool = False) -> list[tuple[str, nn.Module]]:
    return [
        ("conv", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias)),
        ("bn", nn.BatchNorm2d(cout)),
    ]


def numbered(layers: list[tuple[str, nn.Module]], index: int) -> list[tuple[str, nn.Module]]:
    return [(f"{name}{index}", module) for name, module in layers]


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return TimeSequential(OrderedDict(conv_bn(cin, cout, 1, stride)))


class ResidualBlock(nn.Module):
    """``act(residual(x) + shortcut(x))``; a block type builds the three parts (``act`` is the
    identity in blocks without an activation after the sum). The NIR export reads these parts."""

    def forward(self, x):
        return self.act(self.residual(x) + self.shortcut(x))


class BasicBlock(ResidualBlock):
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


class Bottleneck(ResidualBlock):
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


def build_stages(block, blocks: list[int], channels: list[int], cin: int, make_act: MakeAct,
                 width: float) -> tuple[nn.ModuleList, list[int]]:
    """Stages of residual blocks, each but the first starting with stride 2; returns the stages
    and their output channels."""
    stages, out_channels = nn.ModuleList(), []
    for i, (n, planes) in enumerate(zip(blocks, channels)):
        planes = scale(planes, width)
        layers = []
        for j in range(n):
            layers.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1, make_act))
            cin = planes * block.expansion
        stages.append(nn.Sequential(*layers))
        out_channels.append(cin)
    return stages, out_channels


def global_pool() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def build_resnet(block, blocks: list[int], channels: list[int], stem: str, stem_channels: int, *,
                 num_classes: int, in_channels: int, make_act: MakeAct, width: float, T: int,
                 spiking: bool, hidden: int = 0) -> SpikingNet:
    """A ResNet; ``hidden`` > 0 puts a linear layer of that many features (scaled by ``width``)
    and an activation between the global pooling and the classifier."""
    encoder, stem_layers = build_stem(stem, in_channels, scale(stem_channels, width), make_act)
    stages, stage_channels = build_stages(block, blocks, channels, scale(stem_channels, width),
                                          make_act, width)
    features, pool = stage_channels[-1], global_pool()
    if hidden:
        features = scale(hidden, width)
        pool = TimeSequential(OrderedDict(avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                          fc=nn.Linear(stage_channels[-1], features),
                                          act=make_act()))
    return SpikingNet(encoder, stem_layers, stages, pool, nn.Linear(features, num_classes), T,
                      spiking, stage_channels)


RESNET20_CHANNELS = [64, 128, 256, 512]


@register_model("resnet20")
def resnet20(channels: list[int] | None = None, **kw) -> SpikingNet:
    """The ResNet-20 of the SNN literature used by EnOF: a stem of three 3x3 convolutions with 64
    channels and a 2x2 average pool, BasicBlocks [2, 2, 2, 2] at 64/128/256/512 channels.

    ``channels`` replaces the four stages' channel counts (before ``width`` scales them; the stem
    keeps 64). The CPU lab widens the last two stages, where the feature maps are 4x4 and 2x2:
    capacity there costs the least time (results/fast_cpu.md)."""
    if channels is None:
        channels = RESNET20_CHANNELS
    if (not isinstance(channels, (list, tuple)) or len(channels) != len(RESNET20_CHANNELS)
            or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)):
        raise SpikeguideError(f"resnet20's channels option takes four positive integers, one per "
                              f"stage (default {RESNET20_CHANNELS}), got {channels!r}")
    return build_resnet(BasicBlock, [2, 2, 2, 2], list(channels), "enof", 64, **kw)


@register_model("resnet19")
def resnet19(**kw) -> SpikingNet:
    """ResNet-19 as the rate-BP paper's official code trains it (``model/resnet.py`` of
    Tab-ct/rate-based-backpropagation): a 3x3 stem with 128 channels, BasicBlocks [3, 3, 2] at
    128/256/512, global average pooling, then a hidden linear layer of 256 features with its
    activation before the classifier (TET's ResNet-19 has the same head; its stem has 64
    channels). The hidden layer's activation is the last one, so RepAct makes it a ReLU and the
    output feature is its 256 values."""
    return build_resnet(BasicBlock, [3, 3, 2], [128, 256, 512], "cifar", 128, hidden=256, **kw)


@register_model("resnet18")
def resnet18(stem: str = "imagenet", **kw) -> SpikingNet:
    """ResNet-18; ``stem="imagenet"`` (7x7/2 conv + 3x3/2 max pool) or ``"cifar"`` (3x3/1 conv).
    With ``stem="cifar"`` it is the ResNet-18 of the rate-BP paper's official code (a 3x3 stem of
    64 channels, no max pooling, BasicBlocks [2, 2, 2, 2] at 64..512, pooling, one linear layer)."""
    return build_resnet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], stem, 64, **kw)


@register_model("resnet34")
def resnet34(stem: str = "imagenet", **kw) -> SpikingNet:
    """ResNet-34; stems as for resnet18."""
    return build_resnet(BasicBlock, [3, 4, 6, 3], [64, 128, 256, 512], stem, 64, **kw)


@register_model("resnet50")
def resnet50(stem: str = "imagenet", **kw) -> SpikingNet:
    """ResNet-50 with bottleneck blocks (output 2048 channels at width 1); stems as for resnet18."""
    return build_resnet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], stem, 64, **kw)
