"""Time-folding helpers.

An SNN activation is ``[T, B, ...]``. Convolutions, batch norm, pooling and linear layers are
time-invariant, so they run once on the folded ``[T*B, ...]`` tensor; batch norm therefore
normalizes input currents with statistics shared over all time steps. Neurons (modules with a
``multistep`` attribute) receive the unfolded ``[T, B, ...]`` tensor and loop over T themselves.
An ANN is the same network with ReLU activations and T = 1.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..neurons.fuse_bn import bn_neuron_forward


def fold_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a time-invariant ``fn`` to ``x`` ``[T, B, ...]`` with T folded into the batch."""
    T, B = x.shape[:2]
    y = fn(x.reshape(T * B, *x.shape[2:]))
    return y.reshape(T, B, *y.shape[1:])


def is_multistep(module: nn.Module) -> bool:
    return getattr(module, "multistep", False)


class TimeSequential(nn.Sequential):
    """``nn.Sequential`` over ``[T, B, ...]``: neurons see time, every other layer sees it folded.
    A batch norm followed by a neuron runs fused with it where it can (``neuron.fuse_bn``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            fused = bn_neuron_forward(modules[i], modules[i + 1], x) if i + 1 < len(modules) else None
            if fused is not None:
                x, i = fused, i + 2
            else:
                x, i = time_apply(modules[i], x), i + 1
        return x


def time_apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``module`` on ``x`` ``[T, B, ...]``: neurons and :class:`TimeSequential` containers
    see the time axis, every other module sees it folded into the batch."""
    if is_multistep(module) or isinstance(module, TimeSequential):
        return module(x)
    return fold_apply(module, x)


def broadcast_time(x: torch.Tensor, T: int) -> torch.Tensor:
    """``[B, ...] -> [T, B, ...]`` as a view: a static input's encoding is shared by every step."""
    return x.unsqueeze(0).expand(T, *x.shape)
