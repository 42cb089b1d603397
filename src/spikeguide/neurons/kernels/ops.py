"""The fused kernels as ``torch.library`` custom ops, so that ``torch.compile`` traces them.

Three ops, each with a fake (meta) implementation that gives the outputs' shapes, dtypes and
strides without running a kernel:

* ``spikeguide::lif_forward``: spikes (and the charged membrane ``h`` saved for backward) of the
  multi-step LIF; its gradient is the op ``spikeguide::lif_backward`` (``register_autograd``);
* ``spikeguide::lif_record``: the spiking pass of rate-based BP (spikes, counts, eligibility).

Outside ``torch.compile`` the same implementations run directly (one ``autograd.Function``
node), since the dispatcher's Python path adds about 0.4 ms to a layer's forward and backward
(a [4, 64] layer on the 2-core development machine at load average 11: 210 us eager, 577 us
through the op, best of 9 interleaved rounds).

``backend`` names the loops that run inside (``"fused"``, ``"compiled"`` or ``"triton"``). A
learnable decay (PLIF) comes as ``decay_tensor`` and is read inside the op, so that the graph
around it has no data-dependent Python float. The surrogate comes by its registered name and
width; the kernels evaluate the built-in ones themselves.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ...errors import SpikeguideError
from ..surrogates import SURROGATES, Surrogate
from . import cpu
from .fused import TorchLoops, as_rows
from .pool import BufferPool

POOL = BufferPool()
_LOOPS = {"fused": TorchLoops(), "compiled": cpu.CppLoops(POOL)}


@functools.cache
def _triton_loops():
    if importlib.util.find_spec("triton") is None:
        raise SpikeguideError("the 'triton' neuron backend needs Triton: pip install triton "
                              "(or use backend='auto')")
    from .triton_lif import TritonLoops

    return TritonLoops()


def loops(backend: str):
    """The forward and backward loops of a fused backend (:class:`~.fused.LoopImpl`)."""
    return _LOOPS.get(backend) or _triton_loops()


def surrogate_name(surrogate: Surrogate) -> str | None:
    """The name the surrogate's class is registered under, or None (the ops need one)."""
    return next((name for name in SURROGATES.names() if SURROGATES.get(name) is type(surrogate)),
                None)


@functools.cache
def _surrogate(name: str, width: float) -> Surrogate:
    return SURROGATES.get(name)(width)


def _decay(decay: float, decay_tensor: Tensor | None) -> float:
    return decay if decay_tensor is None else float(decay_tensor)


def _output_strides(current: Tensor) -> list[int]:
    return list(as_rows(current)[1])


# The neuron -----------------------------------------------------------------------------------

def _forward_impl(current: Tensor, decay: float, decay_tensor: Tensor | None, threshold: float,
                  soft: bool, save_h: bool, backend: str) -> tuple[Tensor, Tensor | None]:
    rows, strides = as_rows(current)
    spikes, h = loops(backend).forward(rows, _decay(decay, decay_tensor), threshold, soft, save_h)
    return spikes.as_strided(current.shape, strides), h


def _backward_impl(grad_spikes: Tensor, h: Tensor, decay: float, decay_tensor: Tensor | None,
                   threshold: float, soft: bool, detach: bool, surrogate: str, width: float,
                   strides: list[int], want_decay: bool, backend: str) -> tuple[Tensor, Tensor]:
    shape = grad_spikes.shape
    if list(grad_spikes.stride()) != strides:  # bring the gradient into the spikes' memory order
        grad_spikes = torch.empty_strided(shape, strides, dtype=h.dtype,
                                          device=h.device).copy_(grad_spikes)
    grad, grad_decay = loops(backend).backward(
        grad_spikes.as_strided(h.shape, (h.shape[1], 1)), h, _decay(decay, decay_tensor),
        threshold, soft, detach, _surrogate(surrogate, width), want_decay)
    grad_decay = (torch.as_tensor(grad_decay, dtype=torch.float64, device=h.device).reshape(())
                  if want_decay else h.new_empty(0, dtype=torch.float64))
    return grad.as_strided(shape, strides), grad_decay


@torch.library.custom_op("spikeguide::lif_forward", mutates_args=())
def lif_forward(current: Tensor, decay: float, decay_tensor: Optional[Tensor], threshold: float,
                soft: bool, detach: bool, surrogate: str, width: float, save_h: bool,
                backend: str) -> tuple[Tensor, Tensor]:
    """(spikes in the memory order of ``current``, ``h`` ``[T, N]`` or an empty tensor)."""
    spikes, h = _forward_impl(current, decay, decay_tensor, threshold, soft, save_h, backend)
    return spikes, (h if save_h else current.new_empty(0))


@lif_forward.register_fake
def _(current, decay, decay_tensor, threshold, soft, detach, surrogate, width, save_h, backend):
    T, N = current.shape[0], current[0].numel()
    spikes = current.new_empty_strided(current.shape, _output_strides(current))
    return spikes, current.new_empty((T, N) if save_h else (0,))


@torch.library.custom_op("spikeguide::lif_backward", mutates_args=())
def lif_backward(grad_spikes: Tensor, h: Tensor, decay: float, decay_tensor: Optional[Tensor],
                 threshold: float, soft: bool, detach: bool, surrogate: str, width: float,
                 strides: list[int], want_decay: bool, backend: str) -> tuple[Tensor, Tensor]:
    """(dL/dcurrent in the spikes' memory order ``strides``, dL/ddecay as a float64 scalar or an
    empty tensor)."""
    return _backward_impl(grad_spikes, h, decay, decay_tensor, threshold, soft, detach, surrogate,
                          width, strides, want_decay, backend)


@lif_backward.register_fake
def _(grad_spikes, h, decay, decay_tensor, threshold, soft, detach, surrogate, width, strides,
      want_decay, backend):
    grad = h.new_empty_strided(grad_spikes.shape, strides)
    return grad, h.new_empty(() if want_decay else (0,), dtype=torch.float64)


def _save(ctx, current, h, decay, decay_tensor, threshold, soft, detach, surrogate, width,
          backend) -> None:
    ctx.save_for_backward(h, decay_tensor)
    ctx.args = (decay, threshold, soft, detach, surrogate, width)
    ctx.strides = _output_strides(current)
    ctx.backend = backend


def _grads(ctx, grad_spikes, backward) -> tuple[Tensor, Tensor | None]:
    """(dL/dcurrent, dL/ddecay_tensor or None) by ``backward`` (the op or its implementation)."""
    h, decay_tensor = ctx.saved_tensors
    decay, threshold, soft, detach, surrogate, width = ctx.args
    want_decay = decay_tensor is not None and ctx.needs_input_grad[2]
    grad, grad_decay = backward(grad_spikes, h, decay, decay_tensor, threshold, soft, detach,
                                surrogate, width, ctx.strides, want_decay, ctx.backend)
    if not want_decay:
        return grad, None
    return grad, grad_decay.to(decay_tensor.dtype).reshape(decay_tensor.shape)


def _setup_context(ctx, inputs, output):
    current, decay, decay_tensor, threshold, soft, detach, surrogate, width, _, backend = inputs
    _save(ctx, current, output[1], decay, decay_tensor, threshold, soft, detach, surrogate, width,
          backend)


def _backward(ctx, grad_spikes, grad_h):
    grad, grad_decay = _grads(ctx, grad_spikes, lif_backward)
    return grad, None, grad_decay, None, None, None, None, None, None, None


lif_forward.register_autograd(_backward, setup_context=_setup_context)


class _EagerLIF(torch.autograd.Function):
    """The op's node outside ``torch.compile``, without the dispatcher's Python overhead (see
    the module docstring): the same implementation, called directly."""

    @staticmethod
    def forward(ctx, current, decay, decay_tensor, threshold, soft, detach, surrogate, width,
                backend):
        save = ctx.needs_input_grad[0] or ctx.needs_input_grad[2]
        spikes, h = _forward_impl(current, decay, decay_tensor, threshold, soft, save, backend)
        if save:
            _save(ctx, current, h, decay, decay_tensor, threshold, soft, detach, surrogate, width,
                  backend)
        return spikes

    @staticmethod
    @once_differentiable  # the hand-derived backward is not itself differentiable
    def backward(ctx, grad_spikes):
        grad, grad_decay = _grads(ctx, grad_spikes, _backward_impl)
        return grad, None, grad_decay, None, None, None, None, None, None


def fused_lif(current: Tensor, decay: float | Tensor, threshold: float, reset: str,
              detach_reset: bool, surrogate: Surrogate, backend: str) -> Tensor:
    """Spikes ``[T, ...]`` of the LIF over ``current`` ``[T, ...]`` on a fused backend: the custom
    op under ``torch.compile``, its implementation directly otherwise. The surrogate must be
    registered (:func:`surrogate_name`)."""
    name = surrogate_name(surrogate)
    if name is None:
        raise SpikeguideError(f"the fused LIF kernels need a registered surrogate; "
                              f"{type(surrogate).__name__} is not in SURROGATES")
    decay_tensor = decay if isinstance(decay, Tensor) else None
    args = (current, 0.0 if decay_tensor is not None else float(decay), decay_tensor,
            float(threshold), reset == "soft", bool(detach_reset), name, float(surrogate.width))
    if not torch.compiler.is_compiling():
        return _EagerLIF.apply(*args, backend)
    save_h = torch.is_grad_enabled() and (current.requires_grad or (
        decay_tensor is not None and decay_tensor.requires_grad))
    return lif_forward(*args, save_h, backend)[0]


# The recording pass of rate-based BP ----------------------------------------------------------

def _record_kernel(backend: str):
    if backend == "compiled":
        return cpu.extension().record
    from .triton_record import record

    return record


def count_dtype(T: int) -> torch.dtype:
    """Spike counts are bytes below 256 steps: a layer's records take 5 bytes a neuron."""
    return torch.uint8 if T < 256 else torch.int32


def record(current: Tensor, decay: float, decay_tensor: Tensor | None, threshold: float,
           soft: bool, detach: bool, sid: int, width: float,
           backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`lif_record`: the custom op under ``torch.compile``, its implementation directly
    otherwise (without the dispatcher's Python overhead)."""
    run = lif_record if torch.compiler.is_compiling() else _record_impl
    return run(current, decay, decay_tensor, threshold, soft, detach, sid, width, backend)


def _record_impl(current: Tensor, decay: float, decay_tensor: Tensor | None, threshold: float,
                 soft: bool, detach: bool, sid: int, width: float,
                 backend: str) -> tuple[Tensor, Tensor, Tensor]:
    rows, strides = as_rows(current)
    T, N = rows.shape
    spikes = torch.empty((T, N), dtype=current.dtype, device=current.device)
    counts = torch.empty(N, dtype=count_dtype(T), device=current.device)
    eligibility = torch.empty(N, dtype=current.dtype, device=current.device)
    _record_kernel(backend)(rows, spikes, counts, eligibility, _decay(decay, decay_tensor),
                            threshold, soft, detach, sid, width)
    shape = current.shape
    return (spikes.as_strided(shape, strides), counts.as_strided(shape[1:], strides[1:]),
            eligibility.as_strided(shape[1:], strides[1:]))


@torch.library.custom_op("spikeguide::lif_record", mutates_args=())
def lif_record(current: Tensor, decay: float, decay_tensor: Optional[Tensor], threshold: float,
               soft: bool, detach: bool, sid: int, width: float,
               backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """(spikes ``[T, ...]``, spike counts ``[...]``, eligibility ``[...]``) in the memory order of
    ``current``, by the C++ (``"compiled"``) or Triton recording kernel."""
    return _record_impl(current, decay, decay_tensor, threshold, soft, detach, sid, width, backend)


@lif_record.register_fake
def _(current, decay, decay_tensor, threshold, soft, detach, sid, width, backend):
    strides = _output_strides(current)
    shape = current.shape
    return (current.new_empty_strided(shape, strides),
            current.new_empty_strided(shape[1:], strides[1:], dtype=count_dtype(shape[0])),
            current.new_empty_strided(shape[1:], strides[1:]))
