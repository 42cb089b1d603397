"""What the fused kernels run: the dynamics a neuron hands them, and what each backend supports.

A neuron whose dynamics a kernel can run says so through ``kernel_spec()`` (see
:class:`spikeguide.neurons.SpikingNeuron`), which returns one of the spec types below; each
backend declares which spec types, devices and dtypes it runs (:data:`SUPPORT`). A neuron with no
spec, or with a spec no backend declares, runs its reference loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..surrogates import Surrogate
from .cpu import LIF_DTYPES as CPU_DTYPES


class LIFSpec(NamedTuple):
    """LIF dynamics, for t = 1..T with u_0 = 0::

        u_t = decay * u_{t-1} + I_t;  s_t = H(u_t - threshold);
        u_t <- u_t - threshold * s_t (reset "soft")  or  u_t * (1 - s_t) (reset "hard")

    with the spike in the reset term a constant for autograd when ``detach_reset``. The fields are
    in the order of the kernels' arguments (``fused_forward(current, *spec, backend)``).
    """

    decay: float | torch.Tensor  # a tensor when learnable (PLIF): the kernels return its gradient
    threshold: float
    reset: str  # "soft" | "hard"
    detach_reset: bool
    surrogate: Surrogate  # the built-in ones are evaluated in the compiled kernels themselves


@dataclass(frozen=True)
class KernelSupport:
    """What one fused backend runs."""

    dynamics: tuple[type, ...]  # the spec types it runs
    devices: tuple[str, ...] | None  # device types; None: any
    dtypes: tuple[torch.dtype, ...] | None  # None: any; a tensor of another dtype runs "fused"

    def runs(self, spec_type: type) -> bool:
        return issubclass(spec_type, self.dynamics)


# float32 arithmetic in registers; bf16/fp16 tensors are read and written in their own dtype
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

SUPPORT = {
    "fused": KernelSupport((LIFSpec,), None, None),
    "compiled": KernelSupport((LIFSpec,), ("cpu",), CPU_DTYPES),
    "triton": KernelSupport((LIFSpec,), ("cuda",), TRITON_DTYPES),
}
