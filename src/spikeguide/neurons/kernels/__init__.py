"""Backends of the multi-step LIF neuron.

* ``"torch"``: the eager reference :func:`spikeguide.neurons.lif.lif_multistep` (autograd through
  every elementwise op of every step); the neuron runs it itself.
* ``"fused"``: one autograd node per layer, the T loop in eager tensor ops with a hand-derived
  backward (:mod:`.fused`); any device and dtype, no compiler needed.
* ``"compiled"``: the same node with both loops in a C++ extension built on first use (:mod:`.cpu`);
  CPU tensors of float32/float64 (other dtypes run the ``"fused"`` loops). Its large outputs are
  reused once nothing references them (:mod:`.pool`); :func:`empty_cache` releases them.
* ``"triton"``: the same node with both loops as Triton kernels (:mod:`.triton_lif`); CUDA
  float32 tensors (other dtypes run ``"fused"``), needs ``pip install triton``. Its logic is
  tested in Triton's CPU interpreter (``TRITON_INTERPRET=1``, which also lets it run on CPU
  tensors) and its compilation to PTX; it has not yet run on a GPU, so ``"auto"`` does not pick
  it.
* ``"auto"``: the fastest tested backend for the tensor's device: ``"compiled"`` on CPU when the
  extension builds, otherwise ``"fused"``.

Every backend gives bit-identical spikes; gradients agree to float rounding (tests/test_backends.py).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from ...errors import SpikeguideError
from ..surrogates import Surrogate
from . import cpu
from .fused import TorchLoops, fused_lif
from .pool import BufferPool

BACKENDS = ("auto", "torch", "fused", "compiled", "triton")
_TORCH_LOOPS = TorchLoops()
_POOL = BufferPool()
_CPP_LOOPS = cpu.CppLoops(_POOL)


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise SpikeguideError(f"unknown neuron backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


@functools.cache
def _triton_loops():
    if importlib.util.find_spec("triton") is None:
        raise SpikeguideError("the 'triton' neuron backend needs Triton: pip install triton "
                              "(or use backend='auto')")
    from .triton_lif import TritonLoops

    return TritonLoops()


def resolve_backend(name: str, current: torch.Tensor) -> str:
    """The backend that runs ``current``: ``"auto"`` resolved, unsupported dtypes downgraded."""
    cpp_ok = current.device.type == "cpu" and current.dtype in cpu.DTYPES
    if name == "auto":
        return "compiled" if cpp_ok and cpu.available() else "fused"
    if name == "compiled":
        if current.device.type != "cpu":
            raise SpikeguideError("the 'compiled' neuron backend runs on CPU; use 'auto' or 'fused'")
        return "compiled" if cpp_ok else "fused"
    if name == "triton":
        if current.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise SpikeguideError("the 'triton' neuron backend runs on CUDA GPUs; use 'auto' on CPU")
        return "triton" if current.dtype == torch.float32 else "fused"
    return name


def fused_forward(current: torch.Tensor, decay: float | torch.Tensor, threshold: float, reset: str,
                  detach_reset: bool, surrogate: Surrogate, backend: str) -> torch.Tensor:
    """Spikes of the multi-step LIF over ``current`` ``[T, ...]`` on a resolved fused backend
    (``"fused"``, ``"compiled"`` or ``"triton"``)."""
    impl = {"compiled": _CPP_LOOPS, "fused": _TORCH_LOOPS}.get(backend) or _triton_loops()
    return fused_lif(current, decay, threshold, reset, detach_reset, surrogate, impl)


def empty_cache() -> None:
    """Release the CPU buffers the ``compiled`` backend keeps for reuse (see :mod:`.pool`)."""
    _POOL.clear()


__all__ = ["BACKENDS", "check_backend", "empty_cache", "fused_forward", "resolve_backend"]
