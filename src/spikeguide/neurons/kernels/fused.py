"""The loops of the fused multi-step LIF, and the row layout every fused kernel works in.

Forward runs the T loop without building a graph and saves only the charged (pre-reset) membrane
``h_t`` of every step; backward runs the hand-derived recurrence (see ``lif_cpu.cpp``). An
*implementation* supplies the two loops: :class:`TorchLoops` (eager tensor ops, any device and
dtype), the compiled CPU extension in :mod:`.cpu` or the Triton kernels; :mod:`.ops` makes them
one autograd node per layer (a ``torch.library`` custom op).
"""

from __future__ import annotations

import functools
import math
from typing import Protocol

import torch

from ..surrogates import Surrogate


class LoopImpl(Protocol):
    def forward(self, current: torch.Tensor, decay: float, threshold: float, soft: bool,
                save_h: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``current`` ``[T, N]`` -> (spikes ``[T, N]``, charged membrane ``[T, N]`` or None)."""

    def backward(self, grad_spikes: torch.Tensor, h: torch.Tensor, decay: float, threshold: float,
                 soft: bool, detach: bool, surrogate: Surrogate,
                 want_decay: bool) -> tuple[torch.Tensor, torch.Tensor | float]:
        """-> (dL/dcurrent ``[T, N]``, dL/ddecay summed over neurons and steps)."""


@functools.cache
def threshold_neighbours(threshold: float, dtype: torch.dtype) -> tuple[float, float]:
    """The largest value of ``dtype`` under the float32 ``threshold`` and the smallest at or over
    it. The compiled and Triton loops keep a bf16/fp16 saved membrane on its spike's side of the
    threshold with them, so that backward's ``h >= threshold`` sees the forward's spike."""
    t = torch.tensor(threshold, dtype=torch.float32)  # the kernels compare in float32
    nearest = t.to(dtype)
    toward = torch.tensor(-math.inf if nearest.float() >= t else math.inf, dtype=dtype)
    pair = sorted((nearest.item(), torch.nextafter(nearest, toward).item()))
    return pair[0], pair[1]


def reset_membrane(h: torch.Tensor, threshold: float, soft: bool) -> torch.Tensor:
    s = (h >= threshold).to(h.dtype)
    return h - threshold * s if soft else h * (1 - s)


class TorchLoops:
    """The two loops in eager tensor ops: a few ops per step, no autograd graph."""

    def forward(self, current, decay, threshold, soft, save_h):
        h = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        spikes = torch.empty_like(h)
        u = torch.zeros_like(h[0])
        for t in range(current.shape[0]):
            ht = torch.mul(u, decay, out=h[t]).add_(current[t])  # decay * u + I, as the reference
            s = spikes[t].copy_(ht >= threshold)
            u = ht - threshold * s if soft else ht * (1 - s)
        return spikes, (h if save_h else None)

    def backward(self, grad_spikes, h, decay, threshold, soft, detach, surrogate, want_decay):
        grad = torch.empty_like(h)
        carry = torch.zeros_like(h[0])
        grad_decay = torch.zeros((), dtype=torch.float64, device=h.device)
        for t in reversed(range(h.shape[0])):
            ht, gs = h[t], grad_spikes[t]
            sg = surrogate.derivative(ht - threshold)
            if soft:
                gh = (gs if detach else gs - threshold * carry) * sg + carry
            else:
                gh = (gs if detach else gs - ht * carry) * sg + carry * (ht < threshold)
            grad[t] = gh
            if want_decay and t > 0:
                grad_decay += (gh * reset_membrane(h[t - 1], threshold, soft)).sum(dtype=torch.float64)
            carry = decay * gh
        return grad, grad_decay


def _dense(t: torch.Tensor) -> bool:
    """True when ``t``'s elements fill one gapless block of memory, in any dimension order."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def as_rows(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` ``[T, ...]`` as ``[T, N]`` rows in its own memory order, and the strides of a
    time-major tensor with that order (for the outputs).

    The kernels are elementwise per neuron, so a channels_last activation keeps its layout, and
    a static input broadcast over T (time stride 0) is read in place instead of copied T times.
    """
    T, N = x.shape[0], x[0].numel()
    if not (_dense(x[0]) and (T == 1 or x.stride(0) in (0, N))):
        x = x.contiguous()
    strides = (N, *x[0].stride())
    return x.as_strided((T, N), (x.stride(0) if T > 1 else N, 1)), strides
