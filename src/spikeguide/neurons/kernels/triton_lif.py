"""Triton kernels of the fused LIF (CUDA; optional dependency ``pip install triton``).

The same two passes as ``lif_cpu.cpp``, one program per block of neurons looping over T. The
logic is tested on CPU with Triton's interpreter (``TRITON_INTERPRET=1``); kernels are launched
with ``enable_fp_fusion=False`` so that no fused multiply-add changes a membrane value.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..surrogates import Surrogate
from .cpu import SURROGATE_IDS
from .fused import threshold_neighbours

BLOCK = 1024
HALF_PI = tl.constexpr(1.5707963267948966)


@triton.jit
def _surrogate(x, width, SID: tl.constexpr):
    if SID == 0:  # rectangle
        d = tl.where(tl.abs(x) < width / 2, 1.0 / width, 0.0)
    elif SID == 1:  # triangle
        d = tl.maximum(1.0 - tl.abs(x) / width, 0.0) / width
    elif SID == 2:  # sigmoid
        s = 1.0 / (1.0 + tl.exp(-x / width))
        d = s * (1.0 - s) / width
    elif SID == 3:  # atan
        z = (HALF_PI / width) * x
        d = (0.5 / width) / (1.0 + z * z)
    else:  # fast sigmoid
        q = 1.0 + tl.abs(x) / width
        d = (0.5 / width) / (q * q)
    return d


@triton.jit
def _forward(cur, spk, mem, stride_t, N, T, decay, threshold, below, above,
             SOFT: tl.constexpr, SAVE_H: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    u = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(T):
        h = decay * u
        h = h + tl.load(cur + t * stride_t + offs, mask=mask, other=0.0).to(tl.float32)
        s = tl.where(h >= threshold, 1.0, 0.0)
        tl.store(spk + t * N + offs, s, mask=mask)
        if SAVE_H:
            if mem.dtype.element_ty != tl.float32:  # on its spike's side once rounded (TritonLoops)
                h_saved = tl.where(s > 0, tl.where(h < above, above, h), tl.where(h > below, below, h))
                tl.store(mem + t * N + offs, h_saved, mask=mask)
            else:
                tl.store(mem + t * N + offs, h, mask=mask)
        if SOFT:
            u = h - threshold * s
        else:
            u = h * (1.0 - s)


@triton.jit
def _backward(grad_s, mem, pre, grad_i, partial, N, T, decay, threshold, width,
              SOFT: tl.constexpr, DETACH: tl.constexpr, SID: tl.constexpr,
              WANT_DECAY: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    c = tl.zeros([BLOCK], dtype=tl.float32)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(T):
        t = T - 1 - i
        h = tl.load(mem + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        gs = tl.load(grad_s + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        if SID >= 0:
            sg = _surrogate(h - threshold, width, SID)
        else:
            sg = tl.load(pre + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        if SOFT:
            if not DETACH:
                gs = gs - threshold * c
            gh = gs * sg + c
        else:
            if not DETACH:
                gs = gs - h * c
            gh = gs * sg + tl.where(h >= threshold, 0.0, c)
        tl.store(grad_i + t * N + offs, gh, mask=mask)
        c = decay * gh
        # dL/ddecay = sum over t >= 1 of dL/dh_t * u_{t-1}, u_{t-1} from h_{t-1}; gh in fp32
        if WANT_DECAY and t > 0:
            hp = tl.load(mem + (t - 1) * N + offs, mask=mask, other=0.0).to(tl.float32)
            sp = tl.where(hp >= threshold, 1.0, 0.0)
            if SOFT:
                up = hp - threshold * sp
            else:
                up = hp * (1.0 - sp)
            acc += gh * up
    if WANT_DECAY:
        tl.store(partial + pid, tl.sum(acc, axis=0))


class TritonLoops:
    """Both loops as Triton kernels over ``[T, N]`` rows of float32, bfloat16 or float16: the
    membrane and all arithmetic are float32 in registers, what is read and written (currents,
    spikes, the saved membrane, gradients) is in the rows' dtype. A bf16/fp16 saved membrane is
    kept on its spike's side of the threshold (:func:`~.fused.threshold_neighbours`)."""

    def forward(self, current, decay, threshold, soft, save_h):
        T, N = current.shape
        spikes = torch.empty((T, N), dtype=current.dtype, device=current.device)
        h = torch.empty_like(spikes) if save_h else spikes  # unused pointer when not saving
        below, above = threshold_neighbours(threshold, current.dtype)
        _forward[(triton.cdiv(N, BLOCK),)](
            current, spikes, h, current.stride(0) if T > 1 else N, N, T, decay, threshold, below,
            above, SOFT=soft, SAVE_H=save_h, BLOCK=BLOCK, enable_fp_fusion=False)
        return spikes, (h if save_h else None)

    def backward(self, grad_spikes, h, decay, threshold, soft, detach, surrogate: Surrogate,
                 want_decay):
        T, N = h.shape
        grad_spikes = grad_spikes.contiguous()
        sid = SURROGATE_IDS.get(type(surrogate), -1)
        pre = surrogate.derivative(h - threshold).contiguous() if sid < 0 else h
        grad = torch.empty_like(h)
        blocks = triton.cdiv(N, BLOCK)
        partial = torch.zeros(blocks if want_decay else 1, dtype=torch.float32, device=h.device)
        _backward[(blocks,)](
            grad_spikes, h, pre, grad, partial, N, T, decay, threshold, surrogate.width,
            SOFT=soft, DETACH=detach, SID=sid, WANT_DECAY=want_decay, BLOCK=BLOCK,
            enable_fp_fusion=False)
        return grad, partial.sum(dtype=torch.float64)
