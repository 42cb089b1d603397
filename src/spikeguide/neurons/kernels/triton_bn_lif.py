"""Triton kernels of batch norm fused with the LIF (CUDA float32; see :mod:`.bn_lif`).

Forward is one kernel (normalise, affine, LIF; the charged membrane is saved for backward, as
the Triton LIF does). Backward pass 1 tiles the neurons as (position, channel) so that each
program sums ``dL/dI`` and ``dL/dI * xhat`` per channel of its tile; the partial sums are added
in torch, in a fixed order. Pass 2 writes ``dL/dx`` in place. Launched with
``enable_fp_fusion=False``, as the LIF kernels are.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..surrogates import Surrogate
from .cpu import SURROGATE_IDS
from .triton_lif import BLOCK, _surrogate


@triton.jit
def _fire_and_reset(h, threshold, SOFT: tl.constexpr):
    """Spikes of the charged membrane ``h`` and the membrane after the reset."""
    s = tl.where(h >= threshold, 1.0, 0.0)
    return s, (h - threshold * s) if SOFT else (h * (1.0 - s))


@triton.jit
def _membrane_grad(gs, h, sg, carry, threshold, SOFT: tl.constexpr, DETACH: tl.constexpr):
    """dL/dh_t from dL/ds_t, the surrogate derivative and ``carry`` = dL/du_t from step t + 1."""
    if SOFT:
        if not DETACH:
            gs = gs - threshold * carry
        return gs * sg + carry
    if not DETACH:
        gs = gs - h * carry
    return gs * sg + tl.where(h >= threshold, 0.0, carry)


@triton.jit
def _bn_forward(x, spk, mem, alpha, beta, stride_t, N, T, C, inner, decay, threshold,
                SOFT: tl.constexpr, SAVE_H: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    ch = (offs // inner) % C
    a = tl.load(alpha + ch, mask=mask, other=0.0)
    b = tl.load(beta + ch, mask=mask, other=0.0)
    u = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(T):
        cur = tl.load(x + t * stride_t + offs, mask=mask, other=0.0) * a
        cur = cur + b
        h = decay * u
        h = h + cur
        s, u = _fire_and_reset(h, threshold, SOFT)
        tl.store(spk + t * N + offs, s, mask=mask)
        if SAVE_H:
            tl.store(mem + t * N + offs, h, mask=mask)


@triton.jit
def _bn_backward_sums(grad_s, x, mem, grad_i, mean, invstd, partial, partial_decay, stride_t, N,
                      T, C, inner, P, decay, threshold, width, SOFT: tl.constexpr,
                      DETACH: tl.constexpr, SID: tl.constexpr, WANT_DECAY: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]
    c = cols[None, :]
    mask = (p < P) & (c < C)
    n = ((p // inner) * C + c) * inner + p % inner
    m = tl.load(mean + c, mask=c < C, other=0.0)
    r = tl.load(invstd + c, mask=c < C, other=0.0)
    carry = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    sum_g = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    sum_gx = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for i in range(T):
        t = T - 1 - i
        h = tl.load(mem + t * N + n, mask=mask, other=0.0)
        gs = tl.load(grad_s + t * N + n, mask=mask, other=0.0)
        gh = _membrane_grad(gs, h, _surrogate(h - threshold, width, SID), carry, threshold, SOFT,
                            DETACH)
        tl.store(grad_i + t * N + n, gh, mask=mask)
        carry = decay * gh
        xv = tl.load(x + t * stride_t + n, mask=mask, other=0.0)
        sum_g += gh
        sum_gx += gh * ((xv - m) * r)
    tl.store(partial + pid_p * 2 * C + cols, tl.sum(sum_g, axis=0), mask=cols < C)
    tl.store(partial + pid_p * 2 * C + C + cols, tl.sum(sum_gx, axis=0), mask=cols < C)
    if WANT_DECAY:  # dL/ddecay = sum over t >= 1 of dL/dh_t * u_{t-1}
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for t in range(1, T):
            _, up = _fire_and_reset(tl.load(mem + (t - 1) * N + n, mask=mask, other=0.0),
                                    threshold, SOFT)
            acc += tl.load(grad_i + t * N + n, mask=mask, other=0.0) * up
        tl.store(partial_decay + pid_p * tl.num_programs(1) + pid_c, tl.sum(tl.sum(acc, axis=1), axis=0))


@triton.jit
def _bn_backward_input(x, grad, alpha, mean, invstd, k1, k2, stride_t, N, T, C, inner,
                       BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    ch = (offs // inner) % C
    a = tl.load(alpha + ch, mask=mask, other=0.0)
    m = tl.load(mean + ch, mask=mask, other=0.0)
    r = tl.load(invstd + ch, mask=mask, other=0.0)
    c1 = tl.load(k1 + ch, mask=mask, other=0.0)
    c2 = tl.load(k2 + ch, mask=mask, other=0.0)
    for t in range(T):
        g = tl.load(grad + t * N + offs, mask=mask, other=0.0)
        xv = tl.load(x + t * stride_t + offs, mask=mask, other=0.0)
        g = a * (g - c1 - ((xv - m) * r) * c2)
        tl.store(grad + t * N + offs, g, mask=mask)


def tile(C: int, inner: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) of the backward's tiles: whole channel rows when the channel is the
    fastest dimension (coalesced loads), else one channel per tile."""
    block_c = min(triton.next_power_of_2(C), 64) if inner == 1 else 1
    return BLOCK // block_c, block_c


class TritonBNLoops:
    """The fused kernels over float32 ``[T, N]`` rows."""

    def channel_sums(self, rows, inner, C):
        """Per-channel sums ``[2, C]`` (float64) of the rows and of their squares (torch)."""
        x = rows.reshape(rows.shape[0], -1, C, inner).double()
        return torch.stack([x.sum((0, 1, 3)), (x * x).sum((0, 1, 3))])

    def forward(self, rows, alpha, beta, inner, decay, threshold, soft, save_h):
        T, N = rows.shape
        spikes = torch.empty((T, N), dtype=rows.dtype, device=rows.device)
        h = torch.empty_like(spikes) if save_h else spikes  # unused pointer when not saving
        _bn_forward[(triton.cdiv(N, BLOCK),)](
            rows, spikes, h, alpha, beta, rows.stride(0) if T > 1 else N, N, T, alpha.numel(),
            inner, decay, threshold, SOFT=soft, SAVE_H=save_h, BLOCK=BLOCK, enable_fp_fusion=False)
        return spikes, (h if save_h else None)

    def backward_sums(self, grad_spikes, h, rows, alpha, beta, mean, invstd, inner, decay,
                      threshold, soft, detach, surrogate: Surrogate, want_decay):
        T, N = rows.shape
        C = alpha.numel()
        grad_spikes = grad_spikes.contiguous()
        block_p, block_c = tile(C, inner)
        P = N // C
        grid = (triton.cdiv(P, block_p), triton.cdiv(C, block_c))
        grad = torch.empty_like(h)
        partial = torch.zeros((grid[0], 2, C), dtype=torch.float32, device=h.device)
        partial_decay = torch.zeros(grid[0] * grid[1], dtype=torch.float32, device=h.device)
        _bn_backward_sums[grid](
            grad_spikes, rows, h, grad, mean.contiguous(), invstd.contiguous(), partial,
            partial_decay, rows.stride(0) if T > 1 else N, N, T, C, inner, P, decay, threshold,
            surrogate.width, SOFT=soft, DETACH=detach, SID=SURROGATE_IDS[type(surrogate)],
            WANT_DECAY=want_decay, BLOCK_P=block_p, BLOCK_C=block_c, enable_fp_fusion=False)
        return grad, partial.sum(0, dtype=torch.float64), partial_decay.sum(dtype=torch.float64)

    def backward_input(self, rows, grad, alpha, mean, invstd, k1, k2, inner):
        T, N = rows.shape
        _bn_backward_input[(triton.cdiv(N, BLOCK),)](
            rows, grad, alpha, mean.contiguous(), invstd.contiguous(), k1.contiguous(),
            k2.contiguous(), rows.stride(0) if T > 1 else N, N, T, alpha.numel(), inner,
            BLOCK=BLOCK, enable_fp_fusion=False)
