"""The spiking pass of rate-based BP for LIF-family neurons, fused into one pass over ``[T, N]``.

Per layer, one kernel gives the spikes, the spike counts and the eligibility that the eager
reference :func:`spikeguide.ratepass.eligibility.record_chunk` computes with about fifteen
elementwise operations a step: ``record`` in ``lif_cpu.cpp`` on CPU (float32/float64) and
:mod:`.triton_record` on CUDA (float32, bfloat16 or float16, the membrane float32 in registers;
with Triton installed). Everything else (other dtypes and devices, surrogates that are not built
in) runs the eager loop, which stays the reference.
"""

from __future__ import annotations

import importlib.util

import torch

from ..surrogates import Surrogate
from . import cpu
from .ops import record
from .spec import TRITON_DTYPES

# The Triton recording kernel passed benchmarks/gpu_check.py's checks on an H200 (results/gpu.md),
# where the eager loop took about 60 ms a layer; False sends CUDA back to the eager loop.
TRITON_RECORD_ON_CUDA = True


def record_backend(current: torch.Tensor, surrogate: Surrogate) -> str | None:
    """The kernel that records ``current`` (``"compiled"``, or ``"triton"`` once
    :data:`TRITON_RECORD_ON_CUDA`), or None where the eager loop does."""
    if type(surrogate) not in cpu.SURROGATE_IDS:
        return None
    if current.device.type == "cpu":
        return "compiled" if current.dtype in cpu.DTYPES and cpu.available() else None
    if (TRITON_RECORD_ON_CUDA and current.device.type == "cuda"
            and current.dtype in TRITON_DTYPES and importlib.util.find_spec("triton") is not None):
        return "triton"
    return None


def fused_record(current: torch.Tensor, decay: float | torch.Tensor, threshold: float, reset: str,
                 detach_reset: bool, surrogate: Surrogate, backend: str
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(spikes ``[T, ...]``, spike counts ``[...]``, eligibility ``[...]``) of one layer, in the
    memory order of ``current`` (a static input broadcast over T is read in place); one call of
    the custom op ``spikeguide::lif_record`` (:mod:`.ops`)."""
    decay_tensor = decay if isinstance(decay, torch.Tensor) else None
    return record(current, 0.0 if decay_tensor is not None else float(decay), decay_tensor,
                  float(threshold), reset == "soft", bool(detach_reset),
                  cpu.SURROGATE_IDS[type(surrogate)], float(surrogate.width), backend)
