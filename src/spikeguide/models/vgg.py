"""VGG-style SNNs: ``vggsnn`` (TET, EnOF on CIFAR10-DVS) and the VGGs of the rate-BP paper's
official code (``model/vgg.py`` of Tab-ct/rate-based-backpropagation): ``vgg11``, ``vgg13``,
``vggsnn_cifar`` and ``vggsnn_dvs``.

A VGG is a list of layers: a number is a 3x3 convolution with that many output channels, then
batch norm and an activation; ``"P"`` is a 2x2 average pooling. The first convolution (with its
BN) is the encoder; its activation, and a pooling that follows it directly, is the stem; every
later pooling closes a stage (the layers after the last pooling form the last stage). The head
flattens the last feature map (``vggsnn``, ``vggsnn_dvs``: the classifier's input size follows
``input_size``) or pools it adaptively to a fixed size first, and one linear layer classifies.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from ..errors import SpikeguideError
from .base import SpikingNet
from .layers import TimeSequential
from .registry import register_model
from .resnet import MakeAct, conv_bn, numbered, scale

POOL = "P"
VGGSNN = [64, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL]
VGG11 = [64, POOL, 128, 256, POOL, 512, 512, POOL, 512, POOL, 512, 512]  # as the official code
VGG13 = [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, 512, POOL, 512]


def official_init(model: nn.Module) -> None:
    """The official VGGs' initialisation: convolution and linear weights from N(0, 0.5^2), zero
    biases (batch norm keeps weight 1, bias 0)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_vgg(layers: Sequence[int | str], *, num_classes: int, in_channels: int,
              make_act: MakeAct, width: float, T: int, spiking: bool, conv_bias: bool,
              head_size: int | None = None, input_size: int | None = None) -> SpikingNet:
    """A VGG from its layer list (module docstring). ``head_size``: adaptive average pooling to
    ``head_size`` x ``head_size`` before the classifier; None: flatten the ``input_size``-sided
    input's last feature map as it is."""
    pools = layers.count(POOL)
    if head_size is None and (input_size is None or input_size % 2 ** pools):
        raise SpikeguideError(f"this VGG needs an input size divisible by {2 ** pools}, got "
                              f"{input_size}")
    cin = scale(layers[0], width)
    encoder = nn.Sequential(OrderedDict(conv_bn(in_channels, cin, 3, bias=conv_bias)))
    stem: list[tuple[str, nn.Module]] = [("act1", make_act())]
    rest = list(layers[1:])
    if rest and rest[0] == POOL:
        stem.append(("pool", nn.AvgPool2d(2)))
        rest.pop(0)
    stages, channels, current, n = nn.ModuleList(), [], [], 0
    for i, item in enumerate(rest):
        if item == POOL:
            current.append(("pool", nn.AvgPool2d(2)))
        else:
            n, cout = n + 1, scale(item, width)
            current += numbered(conv_bn(cin, cout, 3, bias=conv_bias), n)
            current.append((f"act{n}", make_act()))
            cin = cout
        if item == POOL or i == len(rest) - 1:  # a stage ends
            stages.append(TimeSequential(OrderedDict(current)))
            channels.append(cin)
            current, n = [], 0
    if head_size is None:
        pool, side = nn.Flatten(), input_size // 2 ** pools
    else:
        pool, side = nn.Sequential(nn.AdaptiveAvgPool2d(head_size), nn.Flatten()), head_size
    return SpikingNet(encoder, TimeSequential(OrderedDict(stem)), stages, pool,
                      nn.Linear(cin * side * side, num_classes), T, spiking, channels)


def official_vgg(layers: Sequence[int | str], **kw) -> SpikingNet:
    """A VGG as the official rate-BP code builds it: convolutions with bias, its initialisation."""
    model = build_vgg(layers, conv_bias=True, **kw)
    official_init(model)
    return model


@register_model("vggsnn")
def vggsnn(*, input_size: int = 48, **kw) -> SpikingNet:
    """VGGSNN (TET, EnOF on CIFAR10-DVS): 64C3-128C3-AP2-256C3-256C3-AP2-512C3-512C3-AP2-512C3-
    512C3-AP2, flattened into a linear classifier; ``input_size`` (48 or 128 for CIFAR10-DVS)
    sets the classifier's input size. Convolutions without bias, PyTorch's initialisation."""
    return build_vgg(VGGSNN, conv_bias=False, input_size=input_size, **kw)


@register_model("vggsnn_dvs")
def vggsnn_dvs(*, input_size: int = 48, **kw) -> SpikingNet:
    """The official code's VGGSNN for CIFAR10-DVS (48x48 frames): the layers of ``vggsnn``, with
    bias in the convolutions and the official initialisation (:func:`official_init`)."""
    return official_vgg(VGGSNN, input_size=input_size, **kw)


@register_model("vggsnn_cifar")
def vggsnn_cifar(**kw) -> SpikingNet:
    """The official code's VGGSNN for CIFAR: the layers of ``vggsnn`` without the last pooling,
    then adaptive average pooling to 3x3 (512 x 9 features into the classifier)."""
    return official_vgg(VGGSNN[:-1], head_size=3, **kw)


@register_model("vgg11")
def vgg11(**kw) -> SpikingNet:
    """The official code's VGG-11: 64-P-128-256-P-512-512-P-512-P-512-512 (not torchvision's
    layer list), global average pooling, one linear layer."""
    return official_vgg(VGG11, head_size=1, **kw)


@register_model("vgg13")
def vgg13(**kw) -> SpikingNet:
    """The official code's VGG-13: 64-64-P-128-128-P-256-256-P-512-512-512-P-512, global average
    pooling, one linear layer."""
    return official_vgg(VGG13, head_size=1, **kw)
