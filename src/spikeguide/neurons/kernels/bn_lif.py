"""Batch norm on input currents fused with the multi-step LIF, as one autograd node.

For currents ``x`` ``[T, B, C, ...]`` (a convolution's or linear layer's output, time unfolded)
and a batch norm over C with statistics over ``T x B x ...``, the node computes
``lif(x * alpha_c + beta_c)`` with ``alpha = weight / sqrt(var + eps)`` and
``beta = bias - mean * alpha``: in training mode ``mean``/``var`` are the batch's (one statistics
pass, then the running statistics are updated as ``nn.BatchNorm`` does), in eval mode the running
ones (the batch norm folds into a per-channel scale and shift).

Forward is one kernel (normalise, affine, LIF) that saves ``x`` (and, on Triton, the charged
membrane); backward is two kernels: the first (on CPU recomputing the membrane per block of
neurons) runs the LIF backward and sums
``dL/dI`` and ``dL/dI * xhat`` per channel; the second turns ``dL/dI`` into ``dL/dx``::

    dL/dx = alpha_c * (dL/dI - mean(dL/dI) - xhat * mean(dL/dI * xhat))   (training)
    dL/dx = alpha_c * dL/dI                                                 (eval)
    dL/dbias = sum dL/dI;  dL/dweight = sum dL/dI * xhat

The two loops come from an implementation: :class:`CppBNLoops` (``lif_cpu.cpp``) or the Triton
kernels of :mod:`.triton_bn_lif`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ..surrogates import Surrogate
from . import cpu
from .fused import as_rows


class BNStats(NamedTuple):
    """What the node reads from an ``nn.BatchNorm``: its parameters, buffers and mode."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    momentum: float
    eps: float
    training: bool

    @classmethod
    def of(cls, bn: nn.modules.batchnorm._BatchNorm) -> BNStats:
        return cls(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps,
                   bn.training)


def channel_rows(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], int]:
    """``x`` ``[T, B, C, ...]`` as ``[T, N]`` rows in memory order, the strides of the outputs,
    and ``inner``: the channel of row element n is ``(n // inner) % C``. Channels-last tensors
    keep their layout (``inner`` = 1); any other layout is made contiguous."""
    d = x.dim()
    if d > 3 and x.permute(0, 1, *range(3, d), 2).is_contiguous():
        inner = 1  # channels last: the channel is the fastest dimension
    else:
        x = x.contiguous()
        inner = x[0, 0, 0].numel()
    rows, strides = as_rows(x)
    return rows, strides, inner


def batch_statistics(x: torch.Tensor, rows: torch.Tensor, inner: int, bn: BNStats,
                     impl) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1 / sqrt(var + eps)) per channel of ``x`` ``[T, B, C, ...]`` (``rows``: its
    ``[T, N]`` rows): the batch's in training mode (updating the running statistics with the
    unbiased variance, as ``nn.BatchNorm`` does), else the running ones."""
    if not bn.training:
        return bn.running_mean.to(x.dtype), 1 / torch.sqrt(bn.running_var.to(x.dtype) + bn.eps)
    count = x.numel() // x.shape[2]
    sums = impl.channel_sums(rows, inner, x.shape[2]) / count  # float64: E[x], E[x^2]
    mean64 = sums[0]
    var64 = (sums[1] - mean64 * mean64).clamp_(min=0)
    with torch.no_grad():
        m = bn.momentum
        bn.running_mean.mul_(1 - m).add_(mean64.to(bn.running_mean.dtype), alpha=m)
        unbiased = var64 * (count / max(count - 1, 1))
        bn.running_var.mul_(1 - m).add_(unbiased.to(bn.running_var.dtype), alpha=m)
    mean, var = mean64.to(x.dtype), var64.to(x.dtype)
    return mean, 1 / torch.sqrt(var + bn.eps)


class FusedBNLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, decay, bn, threshold, soft, detach, surrogate, impl):
        rows, strides, inner = channel_rows(x)
        mean, invstd = batch_statistics(x, rows, inner, bn, impl)
        alpha = (weight.to(x.dtype) * invstd).contiguous()
        beta = (bias.to(x.dtype) - mean * alpha).contiguous()
        decay_value = float(decay)
        save = any(ctx.needs_input_grad[:4])
        spikes, h = impl.forward(rows, alpha, beta, inner, decay_value, threshold, soft, save)
        if save:
            ctx.save_for_backward(rows, h, alpha, beta, mean, invstd)
            ctx.args = (inner, decay_value, threshold, soft, detach, surrogate, impl, bn.training)
            ctx.layout = (x.shape, strides)
            ctx.decay_like = decay if isinstance(decay, torch.Tensor) else None
        return spikes.as_strided(x.shape, strides)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes):
        rows, h, alpha, beta, mean, invstd = ctx.saved_tensors
        inner, decay, threshold, soft, detach, surrogate, impl, training = ctx.args
        shape, strides = ctx.layout
        if grad_spikes.stride() != strides:
            grad_spikes = torch.empty_strided(shape, strides, dtype=rows.dtype,
                                              device=rows.device).copy_(grad_spikes)
        want_decay = ctx.needs_input_grad[3]
        grad, sums, grad_decay = impl.backward_sums(
            grad_spikes.as_strided(rows.shape, (rows.shape[1], 1)), h, rows, alpha, beta, mean,
            invstd, inner, decay, threshold, soft, detach, surrogate, want_decay)
        sum_g, sum_gx = sums[0], sums[1]
        if training:
            count = rows.numel() // alpha.numel()
            k1, k2 = (sum_g / count).to(rows.dtype), (sum_gx / count).to(rows.dtype)
        else:
            k1 = k2 = torch.zeros_like(alpha)
        if ctx.needs_input_grad[0]:
            impl.backward_input(rows, grad, alpha, mean, invstd, k1, k2, inner)
        grad_x = grad.as_strided(shape, strides) if ctx.needs_input_grad[0] else None
        like = ctx.decay_like
        if want_decay:
            grad_decay = grad_decay.to(device=like.device, dtype=like.dtype).reshape(like.shape)
        else:
            grad_decay = None
        return (grad_x, sum_gx.to(rows.dtype), sum_g.to(rows.dtype), grad_decay,
                None, None, None, None, None, None)


class CppBNLoops:
    """The fused kernels of ``lif_cpu.cpp``; outputs come from ``pool`` (a
    :class:`~.pool.BufferPool`)."""

    def __init__(self, pool):
        self.pool = pool

    def _empty(self, like: torch.Tensor) -> torch.Tensor:
        return self.pool.empty(tuple(like.shape), like.dtype)

    def channel_sums(self, rows, inner, C):
        """Per-channel sums ``[2, C]`` (float64) of the rows and of their squares."""
        return cpu.extension().bn_stats(rows, inner, C)

    def forward(self, rows, alpha, beta, inner, decay, threshold, soft, save_h):
        """-> (spikes, None): backward recomputes the membrane from ``rows``."""
        spikes = self._empty(rows)
        cpu.extension().bn_forward(rows, spikes, alpha, beta, inner, decay, threshold, soft)
        return spikes, None

    def backward_sums(self, grad_spikes, h, rows, alpha, beta, mean, invstd, inner, decay, threshold,
                      soft, detach, surrogate: Surrogate, want_decay):
        grad = self._empty(rows)
        sums, grad_decay = cpu.extension().bn_backward_sums(
            grad_spikes, rows, grad, alpha, beta, mean.contiguous(), invstd.contiguous(), inner,
            decay, threshold, soft, detach, cpu.SURROGATE_IDS[type(surrogate)], surrogate.width,
            want_decay)
        return grad, sums, grad_decay

    def backward_input(self, rows, grad, alpha, mean, invstd, k1, k2, inner):
        cpu.extension().bn_backward_input(rows, grad, alpha, mean.contiguous(),
                                          invstd.contiguous(), k1.contiguous(), k2.contiguous(),
                                          inner)


def fused_bn_lif(x: torch.Tensor, bn: BNStats, decay: float | torch.Tensor, threshold: float,
                 reset: str, detach_reset: bool, surrogate: Surrogate, impl) -> torch.Tensor:
    """Spikes ``[T, B, C, ...]`` of the LIF over the batch-normalised currents ``x``."""
    return FusedBNLIF.apply(x, bn.weight, bn.bias, decay, bn, threshold, reset == "soft",
                            detach_reset, surrogate, impl)
