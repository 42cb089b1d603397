"""Triton kernel of the fused spiking pass of rate-based BP (CUDA; ``pip install triton``).

The same loop as ``record`` in ``lif_cpu.cpp``: one program per block of neurons walks the T
steps keeping the membrane, the eligibility trace ``kappa``, the eligibility sum and the spike
count in registers. Tested in Triton's interpreter (``TRITON_INTERPRET=1``), which also runs it on
CPU tensors; launched with ``enable_fp_fusion=False`` so that the membrane, and with it every
spike, equals the neuron's own.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_lif import BLOCK, _surrogate


@triton.jit
def _record(cur, spk, cnt, elig, stride_t, N, T, decay, threshold, width,
            SOFT: tl.constexpr, DETACH: tl.constexpr, SID: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    u = tl.zeros([BLOCK], dtype=tl.float32)
    kappa = tl.zeros([BLOCK], dtype=tl.float32)
    e = tl.zeros([BLOCK], dtype=tl.float32)
    n = tl.zeros([BLOCK], dtype=tl.int32)
    for t in range(T):
        h = decay * u
        h = h + tl.load(cur + t * stride_t + offs, mask=mask, other=0.0).to(tl.float32)
        kappa = kappa * decay + 1.0
        g = _surrogate(h - threshold, width, SID)
        fired = h >= threshold
        s = tl.where(fired, 1.0, 0.0)
        tl.store(spk + t * N + offs, s, mask=mask)
        n += fired.to(tl.int32)
        e = e + g * kappa
        if SOFT:
            if not DETACH:
                kappa = kappa + -threshold * kappa * g
            u = h - threshold * s
        else:
            if DETACH:
                kappa = kappa - kappa * s
            else:
                kappa = kappa * ((1.0 - s) - h * g)
            u = h - h * s
    tl.store(cnt + offs, n.to(cnt.dtype.element_ty), mask=mask)
    tl.store(elig + offs, e / T, mask=mask)


def record(rows: torch.Tensor, spikes: torch.Tensor, counts: torch.Tensor,
           eligibility: torch.Tensor, decay: float, threshold: float, soft: bool, detach: bool,
           sid: int, width: float) -> None:
    """Fill ``spikes`` ``[T, N]``, ``counts`` and ``eligibility`` ``[N]`` from float32 ``rows``
    ``[T, N]`` (row stride N, or 0 for a broadcast input)."""
    T, N = rows.shape
    _record[(triton.cdiv(N, BLOCK),)](
        rows, spikes, counts, eligibility, rows.stride(0) if T > 1 else N, N, T, decay, threshold,
        width, SOFT=soft, DETACH=detach, SID=sid, BLOCK=BLOCK, enable_fp_fusion=False)
