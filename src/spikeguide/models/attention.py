"""Spiking attention: the products of two spike tensors, and the attention modules built on them.

Tokens stay spatial maps ``[T, B, C, H, W]`` (N = H * W tokens of C channels), so the 1x1
convolutions that project them run time-folded like any other convolution and the neurons are the
zoo's neurons. Heads are views ``[T, B, heads, C / heads, N]`` of those maps.

The products are modules (:class:`SpikeMatmul`, :class:`SpikeMask`, :class:`SpikeSum`) so that the
energy report (:mod:`spikeguide.analysis.activity`) sees them and counts their synaptic
operations. Every attention module derives from :class:`SpikeAttention`: a product of two spike
tensors is not linear over time (the time average of ``q_t k_t`` is not the product of the
averages), so rate-based backpropagation and NIR export refuse such a module by that class.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from ..neurons import is_spiking
from .layers import TimeSequential, time_apply

MakeAct = Callable[[], nn.Module]
SCALE = 0.125  # Spikformer's fixed attention scale (no softmax)


class SpikeMatmul(nn.Module):
    """``a @ b`` over the last two axes."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


class SpikeMask(nn.Module):
    """``a * b`` (broadcasting): a mask when one side is spikes; the AND of two spike tensors is
    spikes again."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class SpikeSum(nn.Module):
    """``a.sum(dim, keepdim=True)``: one accumulate per nonzero entry."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a.sum(self.dim, keepdim=True)


class SpikeAttention(nn.Module):
    """Base class of attention modules that multiply two spike tensors (see the module docstring)."""


def half_threshold_act(make_act: MakeAct) -> nn.Module:
    """An activation whose spiking neuron fires at half the configured threshold (the attention
    neurons of Spikformer, SDT and QKFormer fire at 0.5 beside 1.0); a ReLU stays a ReLU."""
    act = make_act()
    if is_spiking(act):
        act.threshold *= 0.5
    return act


def conv_bn_act(cin: int, cout: int, make_act: MakeAct | None, kernel: int = 1,
                bias: bool = False, pool: bool = False) -> TimeSequential:
    """conv -> BN [-> activation] [-> 3x3/2 max pooling], time-folded."""
    layers = [("conv", nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=bias)),
              ("bn", nn.BatchNorm2d(cout))]
    if make_act is not None:
        layers.append(("act", make_act()))
    if pool:
        layers.append(("pool", nn.MaxPool2d(3, 2, 1)))
    return TimeSequential(OrderedDict(layers))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[T, B, C, H, W] -> [T, B, heads, C / heads, N]`` as a view."""
    T, B, C = x.shape[:3]
    return x.reshape(T, B, heads, C // heads, -1)


def merge_heads(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[T, B, heads, C / heads, N]`` back to the shape of ``like`` ``[T, B, C, H, W]``."""
    return x.reshape(like.shape)


class SpikingSelfAttention(SpikeAttention):
    """Spikformer's spiking self-attention (SSA, Zhou et al., ICLR 2023)::

        Q, K, V = SN(BN(conv1x1(X)))      per head [N, d]
        out     = proj(SN_0.5(Q K^T V * 0.125))   no softmax; proj = SN(BN(conv1x1))

    ``Q K^T`` is a product of two spike tensors; ``(Q K^T) V`` multiplies its integer counts with
    spikes. The official code's Linear+BN1d over tokens is a 1x1 convolution + BN2d over the token
    map here (the same function); q, k and v have no bias (the BN after them makes one redundant).
    """

    def __init__(self, dim: int, heads: int, make_act: MakeAct):
        super().__init__()
        self.heads = heads
        self.q = conv_bn_act(dim, dim, make_act)
        self.k = conv_bn_act(dim, dim, make_act)
        self.v = conv_bn_act(dim, dim, make_act)
        self.qk = SpikeMatmul()
        self.attn_v = SpikeMatmul()
        self.attn_act = half_threshold_act(make_act)
        self.proj = conv_bn_act(dim, dim, make_act, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(f(x), self.heads) for f in (self.q, self.k, self.v))  # [.., d, N]
        attn = self.qk(q.transpose(-2, -1), k) * SCALE  # [.., N, N]
        out = self.attn_v(attn, v.transpose(-2, -1)).transpose(-2, -1)  # [.., d, N]
        return self.proj(time_apply(self.attn_act, merge_heads(out, x)))


class SpikeDrivenSelfAttention(SpikeAttention):
    """The Spike-driven Transformer's self-attention (SDSA, Yao et al., NeurIPS 2023), with its
    membrane shortcut: the block's input is a current, and the attention adds to it::

        S       = SN(X)
        Q, K, V = SN(BN(conv1x1(S)))
        out     = X + BN(conv1x1(Q * SN_0.5(sum_tokens(K * V))))

    ``K * V`` and ``Q * (...)`` are masks (the AND of spikes), the sum over tokens the only
    accumulation.
    """

    def __init__(self, dim: int, heads: int, make_act: MakeAct):
        super().__init__()
        self.heads = heads
        self.shortcut_act = make_act()
        self.q = conv_bn_act(dim, dim, make_act)
        self.k = conv_bn_act(dim, dim, make_act)
        self.v = conv_bn_act(dim, dim, make_act)
        self.kv = SpikeMask()
        self.kv_sum = SpikeSum(-1)
        self.kv_act = half_threshold_act(make_act)
        self.q_kv = SpikeMask()
        self.proj = conv_bn_act(dim, dim, None, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = time_apply(self.shortcut_act, x)
        q, k, v = (split_heads(f(s), self.heads) for f in (self.q, self.k, self.v))  # [.., d, N]
        kv = time_apply(self.kv_act, self.kv_sum(self.kv(k, v)))  # [.., d, 1]
        return x + self.proj(merge_heads(self.q_kv(q, kv), x))


class QKAttention(SpikeAttention):
    """QKFormer's Q-K attention (Zhou et al., NeurIPS 2024): a binary attention vector from Q
    masks K, linear in the number of tokens::

        Q, K = SN(BN(conv1x1(X)))
        A    = SN_0.5(sum over the head's channels of Q)   token attention, [1, N] per head
               (``axis="channel"``: the sum over tokens, [d, 1] per head)
        out  = SN(BN(conv1x1(A * K)))
    """

    def __init__(self, dim: int, heads: int, make_act: MakeAct, axis: str = "token"):
        super().__init__()
        self.heads = heads
        self.q = conv_bn_act(dim, dim, make_act)
        self.k = conv_bn_act(dim, dim, make_act)
        self.q_sum = SpikeSum(-2 if axis == "token" else -1)
        self.attn_act = half_threshold_act(make_act)
        self.mask = SpikeMask()
        self.proj = conv_bn_act(dim, dim, make_act, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = (split_heads(f(x), self.heads) for f in (self.q, self.k))
        attn = time_apply(self.attn_act, self.q_sum(q))
        return self.proj(merge_heads(self.mask(attn, k), x))


def spiking_mlp(dim: int, hidden: int, make_act: MakeAct, last_act: bool = True) -> TimeSequential:
    """Two 1x1 conv-BN(-activation) layers over the tokens."""
    return TimeSequential(OrderedDict(fc1=conv_bn_act(dim, hidden, make_act, bias=True),
                                      fc2=conv_bn_act(hidden, dim, make_act if last_act else None,
                                                      bias=True)))


class TransformerBlock(nn.Module):
    """``x + attn(x)``, then ``x + mlp(x)`` (Spikformer and QKFormer)."""

    def __init__(self, attn: SpikeAttention, mlp: nn.Module):
        super().__init__()
        self.attn = attn
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class SpikeDrivenMLP(nn.Module):
    """The SDT MLP with membrane shortcut: ``x + BN(conv(SN(BN(conv(SN(x))))))``."""

    def __init__(self, dim: int, hidden: int, make_act: MakeAct):
        super().__init__()
        self.act = make_act()
        self.body = spiking_mlp(dim, hidden, make_act, last_act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(time_apply(self.act, x))


class SpikeDrivenBlock(nn.Module):
    """The SDT block: attention and MLP each add to the membrane-shortcut stream."""

    def __init__(self, dim: int, heads: int, hidden: int, make_act: MakeAct):
        super().__init__()
        self.attn = SpikeDrivenSelfAttention(dim, heads, make_act)
        self.mlp = SpikeDrivenMLP(dim, hidden, make_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))
