"""Spiking transformers and their ANN twins: ``spikformer``, ``sdt`` (Spike-driven Transformer V1)
and ``qkformer``.

Each follows the zoo's contract (:mod:`.base`): the encoder is the tokenizer's first convolution
and BN, the stem the rest of the tokenizer, each stage ends on a token map ``[T, B, C, H, W]``
(so hybrid cuts and ``stage_channels`` mean what they mean for the CNNs), the pool averages over
the tokens and the classifier is one linear layer. Settings are the papers' and their official
code's (ZK-Zhou/spikformer, BICLab/Spike-Driven-Transformer, zhouchenlin2096/QKFormer):

* ``stem="cifar"`` (default): the CIFAR configurations at 32x32, 8x8 tokens;
* ``stem="imagenet"``: the ImageNet ones at 224x224, 14x14 tokens (one 3x3/2 max pooling after
  each of the four tokenizer convolutions).

``depth`` and ``dim`` default to the stem's paper configuration; ``width`` multiplies ``dim``,
rounded so that every head and the tokenizer's ``dim / 8`` channels stay whole. The attention modules are in :mod:`.attention`.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ..errors import SpikeguideError
from .attention import (
                        MakeAct,
                        QKAttention,
                        SpikeDrivenBlock,
                        SpikingSelfAttention,
                        TransformerBlock,
                        conv_bn_act,
                        spiking_mlp,
)
from .base import SpikingNet
from .layers import TimeSequential, time_apply
from .registry import register_model
from .resnet import global_pool

# stem -> (depth, dim) of the papers' main configurations
SPIKFORMER_SIZES = {"cifar": (4, 384), "imagenet": (8, 384)}
SDT_SIZES = {"cifar": (2, 512), "imagenet": (8, 384)}
QKFORMER_SIZES = {"cifar": (4, 384), "imagenet": (10, 384)}
MLP_RATIO = 4


def size_for(sizes: dict, stem: str, depth: int | None, dim: int | None, width: float,
             heads: int, head_unit: int = 1) -> tuple[int, int]:
    """(depth, dim) for ``stem`` with the defaults of ``sizes``, ``dim`` scaled by ``width`` and
    rounded to a multiple of 8 and of ``head_unit * heads`` (``head_unit``: how many times the
    narrowest stage divides ``dim``)."""
    if stem not in sizes:
        raise SpikeguideError(f"unknown stem {stem!r}; choose 'cifar' or 'imagenet'")
    default_depth, default_dim = sizes[stem]
    depth = default_depth if depth is None else depth
    step = math.lcm(8, head_unit * heads)
    dim = max(step, int(round((default_dim if dim is None else dim) * width / step)) * step)
    if depth < 1:
        raise SpikeguideError(f"model depth must be >= 1, got {depth}")
    return depth, dim


def pooled_after(stem: str, cifar: tuple[int, ...]) -> tuple[int, ...]:
    """Tokenizer convolutions followed by max pooling: ``cifar`` at 32x32, all four at 224."""
    return cifar if stem == "cifar" else (0, 1, 2, 3)


class SpikingPatchSplitting(nn.Module):
    """Spikformer's SPS after its first conv-BN: SN, three conv-BN-SN layers (max pooling after
    some), then the relative position embedding ``x + SN(BN(conv3x3(x)))`` on spikes."""

    def __init__(self, dim: int, make_act: MakeAct, pooled: tuple[int, ...]):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [("act0", make_act())]
        if 0 in pooled:
            layers.append(("pool0", nn.MaxPool2d(3, 2, 1)))
        for i, (cin, cout) in enumerate([(dim // 8, dim // 4), (dim // 4, dim // 2),
                                         (dim // 2, dim)], 1):
            layers.append((f"proj{i}", conv_bn_act(cin, cout, make_act, 3, pool=i in pooled)))
        self.proj = TimeSequential(OrderedDict(layers))
        self.rpe = conv_bn_act(dim, dim, make_act, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x + self.rpe(x)


class SpikeDrivenPatchSplitting(nn.Module):
    """SDT's SPS after its first conv-BN: as Spikformer's, but its last layer and the position
    embedding add currents (membrane shortcut): ``x + BN(conv3x3(SN(x)))`` with ``x`` the last
    conv-BN output."""

    def __init__(self, dim: int, make_act: MakeAct, pooled: tuple[int, ...]):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [("act0", make_act())]
        if 0 in pooled:
            layers.append(("pool0", nn.MaxPool2d(3, 2, 1)))
        for i, (cin, cout) in enumerate([(dim // 8, dim // 4), (dim // 4, dim // 2)], 1):
            layers.append((f"proj{i}", conv_bn_act(cin, cout, make_act, 3, pool=i in pooled)))
        layers.append(("proj3", conv_bn_act(dim // 2, dim, None, 3, pool=3 in pooled)))
        self.proj = TimeSequential(OrderedDict(layers))
        self.rpe_act = make_act()
        self.rpe = conv_bn_act(dim, dim, None, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x + self.rpe(time_apply(self.rpe_act, x))


class QKPatchEmbedding(nn.Module):
    """QKFormer's patch embedding with a spiking shortcut: ``main(x) + SN(BN(conv1x1/s(x)))``.
    The first stage's (``first``) starts from the encoder's current through an SN, and ``main``
    is one conv-BN-SN; the later stages' start from the stream and ``main`` is two, the second
    max-pooled. ``stride`` 2 pools the last layer of ``main`` and strides the shortcut."""

    def __init__(self, cin: int, cout: int, make_act: MakeAct, stride: int, first: bool):
        super().__init__()
        self.act0 = make_act() if first else nn.Identity()
        convs = [(cin, cout)] if first else [(cin, cout), (cout, cout)]
        self.main = TimeSequential(OrderedDict(
            (f"conv{i}", conv_bn_act(a, b, make_act, 3, pool=stride == 2 and i == len(convs)))
            for i, (a, b) in enumerate(convs, 1)))
        self.shortcut = TimeSequential(OrderedDict(
            conv=nn.Conv2d(cin, cout, 1, stride, bias=False), bn=nn.BatchNorm2d(cout),
            act=make_act()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = time_apply(self.act0, x)
        return self.main(x) + self.shortcut(x)


def encoder(in_channels: int, channels: int) -> nn.Sequential:
    """The tokenizer's first 3x3 conv and BN (run once on a static image)."""
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
                                     bn=nn.BatchNorm2d(channels)))


@register_model("spikformer")
def spikformer(*, num_classes: int, in_channels: int, make_act: MakeAct, width: float, T: int,
               spiking: bool, stem: str = "cifar", depth: int | None = None,
               dim: int | None = None, heads: int = 12) -> SpikingNet:
    """Spikformer (Zhou et al., ICLR 2023): SPS tokenizer, ``depth`` blocks of spiking
    self-attention and MLP (ratio 4), BN after every projection, the mean over tokens into the
    classifier. CIFAR: 4-384, 12 heads, max pooling after the tokenizer's last two convolutions
    (8x8 tokens); ImageNet (``stem="imagenet"``): 8-384 by default (8-512 and 8-768 with ``dim``).
    Each block is a stage (hybrid cuts between blocks)."""
    depth, dim = size_for(SPIKFORMER_SIZES, stem, depth, dim, width, heads)
    stages = nn.ModuleList(
        TransformerBlock(SpikingSelfAttention(dim, heads, make_act),
                         spiking_mlp(dim, MLP_RATIO * dim, make_act))
        for _ in range(depth))
    return SpikingNet(encoder(in_channels, dim // 8),
                      SpikingPatchSplitting(dim, make_act, pooled_after(stem, (2, 3))),
                      stages, global_pool(), nn.Linear(dim, num_classes), T, spiking,
                      [dim] * depth)


@register_model("sdt")
def sdt(*, num_classes: int, in_channels: int, make_act: MakeAct, width: float, T: int,
        spiking: bool, stem: str = "cifar", depth: int | None = None, dim: int | None = None,
        heads: int = 8) -> SpikingNet:
    """Spike-driven Transformer V1 (Yao et al., NeurIPS 2023): SPS with membrane shortcut,
    ``depth`` blocks of spike-driven self-attention and MLP (ratio 4), the mean over tokens
    through a last spiking neuron (the official ``head_lif``; RepAct makes it a ReLU) into the
    classifier. CIFAR: 2-512, 8 heads, pooling ``"0011"`` (8x8 tokens); ImageNet: 8-384 by
    default (8-512, 8-768 with ``dim``), pooling ``"1111"``. Each block is a stage."""
    depth, dim = size_for(SDT_SIZES, stem, depth, dim, width, heads)
    stages = nn.ModuleList(SpikeDrivenBlock(dim, heads, MLP_RATIO * dim, make_act)
                           for _ in range(depth))
    pool = TimeSequential(OrderedDict(avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                      act=make_act()))
    return SpikingNet(encoder(in_channels, dim // 8),
                      SpikeDrivenPatchSplitting(dim, make_act, pooled_after(stem, (2, 3))),
                      stages, pool, nn.Linear(dim, num_classes), T, spiking, [dim] * depth)


@register_model("qkformer")
def qkformer(*, num_classes: int, in_channels: int, make_act: MakeAct, width: float, T: int,
             spiking: bool, stem: str = "cifar", depth: int | None = None,
             dim: int | None = None, heads: int = 8, attention: str = "token") -> SpikingNet:
    """QKFormer (Zhou et al., NeurIPS 2024): three stages at ``dim/4``, ``dim/2`` and ``dim``
    channels, each a patch embedding with a spiking shortcut, the first two with Q-K attention
    blocks (``attention="token"`` as the official CIFAR code, or ``"channel"``), the last with
    Spikformer's self-attention; 8 heads, MLP ratio 4. CIFAR: 4-384, blocks [1, 1, 2] at 32, 16
    and 8 tokens a side. ImageNet: 10-384 by default, blocks [1, 2, 7]; the first embedding pools
    twice (to 56x56), the others once (14x14 at the end). The ImageNet tokenizer keeps the CIFAR
    one's layers with that pooling; the official one differs in its first embedding's layers.
    Each embedding and its blocks form a stage."""
    if attention not in ("token", "channel"):
        raise SpikeguideError(f"unknown attention {attention!r}; choose 'token' or 'channel'")
    depth, dim = size_for(QKFORMER_SIZES, stem, depth, dim, width, heads, head_unit=4)
    first = (1, 1) if stem == "cifar" else (1, 2)
    if depth <= sum(first):
        raise SpikeguideError(f"qkformer needs depth > {sum(first)} with stem {stem!r}, got {depth}")
    blocks = [*first, depth - sum(first)]
    dims = [dim // 4, dim // 2, dim]
    stages = nn.ModuleList()
    for i, (n, d) in enumerate(zip(blocks, dims)):
        embed = QKPatchEmbedding(dim // 8 if i == 0 else dims[i - 1], d, make_act,
                                 stride=2 if i > 0 or stem == "imagenet" else 1, first=i == 0)
        layers = [embed]
        for _ in range(n):
            attn = (QKAttention(d, heads, make_act, attention) if i < 2
                    else SpikingSelfAttention(d, heads, make_act))
            layers.append(TransformerBlock(attn, spiking_mlp(d, MLP_RATIO * d, make_act)))
        stages.append(nn.Sequential(*layers))
    stem_pool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
    return SpikingNet(encoder(in_channels, dim // 8), TimeSequential(OrderedDict(pool=stem_pool)),
                      stages, global_pool(), nn.Linear(dim, num_classes), T, spiking, dims)
