"""The two autograd nodes of the rate pass: a straight-through rate unit and BN on recorded stats."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


class _RateUnit(torch.autograd.Function):
    """Forward: the recorded rate. Backward: the recorded eligibility (straight-through)."""

    @staticmethod
    def forward(ctx, x, rate, eligibility):
        ctx.save_for_backward(eligibility)
        return rate.view_as(rate)  # the recorded tensor itself: no copy

    @staticmethod
    def backward(ctx, grad):
        (eligibility,) = ctx.saved_tensors
        return grad * eligibility, None, None


def rate_unit(x: torch.Tensor, rate: torch.Tensor, eligibility: torch.Tensor) -> torch.Tensor:
    """``rate`` in value, ``d out / d x = eligibility`` (elementwise) in backward."""
    return _RateUnit.apply(x, rate, eligibility)


class _RecordedBatchNorm(torch.autograd.Function):
    """Batch norm of the time-averaged input with the statistics recorded in the spiking pass.

    The spiking pass normalizes ``x_t`` with statistics pooled over (time, batch, space); the rate
    pass sees ``xbar = mean_t x_t``, whose mean is the pooled mean. If the output gradient is the
    same at every step (the rate approximation), the pooled statistics' derivatives summed over
    time are those of ordinary batch statistics of ``xbar`` (``dmu/dxbar_i = 1/N``,
    ``dvar/dxbar_i = 2 (xbar_i - mu) / N``), so the backward is the usual training-mode BN
    backward with the recorded mean and inverse std (docs/ratebp.md): PyTorch's own kernel,
    handed those statistics as the ones it saved. At T = 1 it is exactly autograd's.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps):
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + eps))
        ctx.eps = eps
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, mean, invstd = ctx.saved_tensors
        affine = weight is not None
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, mean, invstd, True, ctx.eps, [True, affine, affine])
        return grad_x, grad_weight, grad_bias, None, None, None


def recorded_batch_norm(x: torch.Tensor, bn: torch.nn.modules.batchnorm._BatchNorm,
                        mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return _RecordedBatchNorm.apply(x, bn.weight, bn.bias, mean, var, bn.eps)
