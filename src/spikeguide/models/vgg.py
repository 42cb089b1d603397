"""VGGSNN for event frames (TET, EnOF on CIFAR10-DVS): 64C3-128C3-AP2-256C3-256C3-AP2-
512C3-512C3-AP2-512C3-512C3-AP2, flattened into a linear classifier."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..errors import SpikeguideError
from .base import SpikingNet
from .layers import TimeSequential
from .registry import register_model
from .resnet import MakeAct, conv_bn, numbered, scale

STAGES = [(64, 128), (256, 256), (512, 512), (512, 512)]


@register_model("vggsnn")
def vggsnn(*, num_classes: int, in_channels: int, make_act: MakeAct, width: float, T: int,
           spiking: bool, input_size: int = 48) -> SpikingNet:
    """VGGSNN; ``input_size`` (48 or 128 for CIFAR10-DVS) sets the classifier's input size."""
    if input_size % 16:
        raise SpikeguideError(f"vggsnn needs an input size divisible by 16, got {input_size}")
    cin = scale(STAGES[0][0], width)
    encoder = nn.Sequential(OrderedDict(conv_bn(in_channels, cin, 3)))
    stem = TimeSequential(OrderedDict(act1=make_act()))
    stages = nn.ModuleList()
    first = True
    for pair in STAGES:
        layers: list[tuple[str, nn.Module]] = []
        for i, cout in enumerate(pair[1:] if first else pair, start=1):
            cout = scale(cout, width)
            layers += numbered(conv_bn(cin, cout, 3), i) + [(f"act{i}", make_act())]
            cin = cout
        layers.append(("pool", nn.AvgPool2d(2)))
        stages.append(TimeSequential(OrderedDict(layers)))
        first = False
    side = input_size // 16
    return SpikingNet(encoder, stem, stages, nn.Flatten(), nn.Linear(cin * side * side, num_classes),
                      T, spiking)
