"""Fused backends of the multi-step neuron.

A neuron hands the kernels its dynamics as a spec (``kernel_spec()``, see :mod:`.spec`); each
backend declares the spec types, devices and dtypes it runs (:data:`.spec.SUPPORT`). Today every
backend runs :class:`~.spec.LIFSpec` (LIF, IF and PLIF with either reset, detached or not, and
any surrogate: the built-in ones are evaluated in the compiled kernels, another one through its
``derivative`` in torch). A neuron without a spec a backend runs uses its reference loop.

* ``"torch"``: the neuron's reference loop (:func:`spikeguide.neurons.reference_loop`: autograd
  through every elementwise op of every step); the neuron runs it itself.
* ``"fused"``: one autograd node per layer, the T loop in eager tensor ops with a hand-derived
  backward (:mod:`.fused`); any device and dtype, no compiler needed.
* ``"compiled"``: the same node with both loops in a C++ extension built on first use (:mod:`.cpu`);
  CPU tensors of float32, float64, bfloat16 and float16. At bf16/fp16 the membrane and all
  arithmetic are float32 (as in ``"triton"``), so ``train.amp = "bf16"`` on CPU keeps the fused
  neuron; the fused batch norm and the rate-BP recording kernel run float32/float64 only. Its
  large outputs are reused once nothing references them (:mod:`.pool`); :func:`empty_cache`
  releases them.
* ``"triton"``: the same node with both loops as Triton kernels (:mod:`.triton_lif`); CUDA
  float32, bfloat16 and float16 tensors (other dtypes run ``"fused"``), needs
  ``pip install triton``. At bf16/fp16 the membrane and all arithmetic stay float32 in
  registers; currents, spikes, the saved membrane and gradients are bf16/fp16 in memory. Its
  logic is tested in Triton's CPU interpreter (``TRITON_INTERPRET=1``, which also lets it run on
  CPU tensors) and compiled to PTX by the tests; float32 ran on an H200 in
  ``benchmarks/gpu_check.py`` (results/gpu.md), bf16/fp16 speed on a GPU is not yet measured.
* ``"auto"``: the fastest tested backend that runs the neuron's dynamics on the tensor:
  ``"compiled"`` on CPU when the extension builds, ``"triton"`` for CUDA float32, bf16 and fp16
  tensors when Triton is installed (1.63x ``"fused"`` in float32 on an H200, results/gpu.md),
  otherwise ``"fused"``; ``"torch"`` for dynamics no kernel runs. Triton's CPU interpreter is
  never picked.

Every backend is a ``torch.library`` custom op with a fake implementation (:mod:`.ops`), so
``torch.compile(model, fullgraph=True)`` traces it (tests/test_compile.py). At the same dtype
every backend gives bit-identical spikes and gradients that agree to float rounding
(tests/test_backends.py); at bf16/fp16 ``"triton"``'s float32 membrane gives float32's spikes
on the rounded currents, where ``"fused"``'s membrane rounds at every step
(tests/test_triton_half.py).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from ...errors import SpikeguideError
from ..surrogates import Surrogate
from . import cpu
from .bn_lif import BNStats, CppBNLoops, fused_bn_lif
from .ops import POOL, fused_lif, loops
from .spec import SUPPORT, KernelSupport, LIFSpec

BACKENDS = ("auto", "torch", "fused", "compiled", "triton")
AUTO_ORDER = ("compiled", "triton", "fused")
_CPP_BN_LOOPS = CppBNLoops(POOL)
BN_BACKENDS = ("compiled", "triton")  # the backends that also run batch norm fused (.bn_lif)


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise SpikeguideError(f"unknown neuron backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


@functools.cache
def _triton_bn_loops():
    loops("triton")  # the same one-line error where Triton is missing
    from .triton_bn_lif import TritonBNLoops

    return TritonBNLoops()


def _devices(name: str) -> tuple[str, ...] | None:
    devices = SUPPORT[name].devices
    if name == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
        devices = (*devices, "cpu")  # Triton's interpreter runs the kernels on CPU tensors
    return devices


def _auto_runs_here(name: str, current: torch.Tensor, dynamics: type) -> bool:
    """Whether ``"auto"`` may pick ``name`` here: on its real devices (not Triton's interpreter),
    its dtypes, and only where it is installed or builds."""
    support = SUPPORT[name]
    return (support.runs(dynamics)
            and (support.devices is None or current.device.type in support.devices)
            and (support.dtypes is None or current.dtype in support.dtypes)
            and (name != "compiled" or cpu.available())
            and (name != "triton" or importlib.util.find_spec("triton") is not None))


def resolve_backend(name: str, current: torch.Tensor, dynamics: type = LIFSpec) -> str:
    """The backend that runs ``current`` for dynamics of the spec type ``dynamics``.

    ``"auto"`` is the first of :data:`AUTO_ORDER` that runs them on this tensor, else ``"torch"``
    (the neuron's reference loop); a named backend must run them on this device, and a dtype it
    lacks runs ``"fused"`` (or ``"torch"`` for dynamics ``"fused"`` does not run).
    """
    if name == "torch":
        return name
    if name == "auto":
        return next((b for b in AUTO_ORDER if _auto_runs_here(b, current, dynamics)), "torch")
    if not SUPPORT[name].runs(dynamics):
        raise SpikeguideError(f"the {name!r} neuron backend does not run {dynamics.__name__} "
                              "dynamics; use 'auto' or 'torch'")
    devices = _devices(name)
    if devices is not None and current.device.type not in devices:
        raise SpikeguideError(f"the {name!r} neuron backend runs on "
                              f"{' or '.join(d.upper() for d in devices)} tensors; use 'auto'")
    dtypes = SUPPORT[name].dtypes
    if dtypes is not None and current.dtype not in dtypes:
        return "fused" if SUPPORT["fused"].runs(dynamics) else "torch"
    return name


def fused_forward(current: torch.Tensor, decay: float | torch.Tensor, threshold: float, reset: str,
                  detach_reset: bool, surrogate: Surrogate, backend: str) -> torch.Tensor:
    """Spikes of the multi-step LIF over ``current`` ``[T, ...]`` on a resolved fused backend
    (``"fused"``, ``"compiled"`` or ``"triton"``)."""
    return fused_lif(current, decay, threshold, reset, detach_reset, surrogate, backend)


def fused_bn_forward(x: torch.Tensor, bn: BNStats, decay: float | torch.Tensor, threshold: float,
                     reset: str, detach_reset: bool, surrogate: Surrogate,
                     backend: str) -> torch.Tensor:
    """Spikes of the LIF over the batch-normalised currents ``x`` ``[T, B, C, ...]`` on a backend
    of :data:`BN_BACKENDS` (see :mod:`.bn_lif`)."""
    impl = _CPP_BN_LOOPS if backend == "compiled" else _triton_bn_loops()
    return fused_bn_lif(x, bn, decay, threshold, reset, detach_reset, surrogate, impl)


def empty_cache() -> None:
    """Release the CPU buffers the ``compiled`` backend keeps for reuse (see :mod:`.pool`)."""
    POOL.clear()


__all__ = ["BACKENDS", "BN_BACKENDS", "BNStats", "SUPPORT", "KernelSupport", "LIFSpec",
           "check_backend", "empty_cache", "fused_bn_forward", "fused_forward", "resolve_backend"]
