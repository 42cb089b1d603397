"""Multi-step spiking neurons: LIF, IF and PLIF.

A neuron module takes input currents shaped ``[T, B, ...]`` and returns spikes of the same shape;
the membrane state lives only inside one call, so nothing leaks between batches and there is no
``reset_net()`` to forget.

Dynamics of the leaky integrate-and-fire neuron (LIF), for t = 1..T with u_0 = 0::

    u_t = decay * u_{t-1} + I_t          (charge; IF is decay = 1)
    s_t = H(u_t - threshold)             (fire; H is the exact Heaviside step, H(0) = 1)
    u_t <- u_t - threshold * s_t          (soft reset)  or  u_t * (1 - s_t)  (hard reset to 0)

With ``detach_reset=True`` the spike in the reset term is treated as a constant by autograd.
The backward pass of H is replaced by a surrogate derivative (:mod:`.surrogates`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..errors import SpikeguideError
from ..registry import Registry
from .kernels import check_backend, fused_forward, resolve_backend
from .surrogates import Surrogate, get_surrogate, spike

RESETS = ("soft", "hard")


def lif_multistep(
    current: torch.Tensor,
    decay: float | torch.Tensor,
    threshold: float,
    reset: str,
    detach_reset: bool,
    surrogate: Surrogate,
) -> torch.Tensor:
    """Reference (eager) LIF over the leading time axis of ``current`` ``[T, ...]``."""
    u = torch.zeros_like(current[0])
    spikes = []
    for t in range(current.shape[0]):
        u = decay * u + current[t]
        s = spike(u - threshold, surrogate)
        r = s.detach() if detach_reset else s
        u = u - threshold * r if reset == "soft" else u * (1 - r)
        spikes.append(s)
    return torch.stack(spikes)


NEURONS: Registry[Callable[..., nn.Module]] = Registry("neuron")


@NEURONS.register("lif")
class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron over ``[T, B, ...]`` input currents.

    Args:
        decay: membrane decay per step, in (0, 1]; 0.5 corresponds to a time constant tau = 2.
        threshold: firing threshold (default 1.0).
        reset: ``"hard"`` (membrane to 0 after a spike, default) or ``"soft"`` (subtract the
            threshold).
        detach_reset: treat the spike in the reset term as a constant for autograd (default False).
        surrogate: a surrogate name from ``SURROGATES`` or a :class:`Surrogate` instance
            (default ``"atan"`` with width 0.5).
        width: the surrogate's width; None keeps the surrogate's default.
        backend: ``"auto"`` (default: the fastest tested one for the input's device), ``"torch"``
            (the eager reference :func:`lif_multistep`), ``"fused"`` or ``"compiled"``; see
            :mod:`spikeguide.kernels`. All give the same spikes.
    """

    multistep = True  # layers.TimeSequential passes [T, B, ...] to modules with this flag

    def __init__(
        self,
        decay: float = 0.5,
        threshold: float = 1.0,
        reset: str = "hard",
        detach_reset: bool = False,
        surrogate: str | Surrogate = "atan",
        width: float | None = None,
        backend: str = "auto",
    ):
        super().__init__()
        if reset not in RESETS:
            raise SpikeguideError(f"neuron reset must be one of {RESETS}, got {reset!r}")
        if not 0 < decay <= 1:
            raise SpikeguideError(f"neuron decay must be in (0, 1], got {decay}")
        if not threshold > 0:
            raise SpikeguideError(f"neuron threshold must be positive, got {threshold}")
        self.threshold = float(threshold)
        self.reset = reset
        self.detach_reset = bool(detach_reset)
        self.surrogate = get_surrogate(surrogate, width)
        self.backend = check_backend(backend)
        self._init_decay(decay)

    def _init_decay(self, decay: float) -> None:
        self.register_buffer("decay", torch.tensor(float(decay)), persistent=False)

    def membrane_decay(self) -> float | torch.Tensor:
        return float(self.decay)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        backend = resolve_backend(self.backend, current)
        args = (current, self.membrane_decay(), self.threshold, self.reset, self.detach_reset,
                self.surrogate)
        return lif_multistep(*args) if backend == "torch" else fused_forward(*args, backend)

    def extra_repr(self) -> str:
        return (
            f"decay={float(self.membrane_decay()):g}, threshold={self.threshold:g}, "
            f"reset={self.reset!r}, detach_reset={self.detach_reset}, surrogate={self.surrogate}, "
            f"backend={self.backend!r}"
        )


@NEURONS.register("if")
class IF(LIF):
    """Integrate-and-fire: an LIF neuron without leak (decay = 1)."""

    def __init__(self, threshold: float = 1.0, reset: str = "hard", detach_reset: bool = False,
                 surrogate: str | Surrogate = "atan", width: float | None = None, decay: float = 1.0,
                 backend: str = "auto"):
        if decay != 1.0:
            raise SpikeguideError("the IF neuron has no leak: its decay is 1; use 'lif' for decay < 1")
        super().__init__(1.0, threshold, reset, detach_reset, surrogate, width, backend)


@NEURONS.register("plif")
class PLIF(LIF):
    """Parametric LIF (Fang et al. 2021): one learnable decay per layer, ``decay = sigmoid(w)``.

    ``decay`` sets the initial value. The parameter is ``decay_logit``, so an ANN twin's
    state_dict lacks it: load ANN weights into a PLIF model with ``strict=False`` (see
    :func:`spikeguide.models.load_twin_weights`).
    """

    def _init_decay(self, decay: float) -> None:
        if decay >= 1:
            raise SpikeguideError("PLIF needs an initial decay below 1 (it is a sigmoid)")
        self.decay_logit = nn.Parameter(torch.tensor(math.log(decay / (1 - decay))))

    def membrane_decay(self) -> torch.Tensor:
        return torch.sigmoid(self.decay_logit)


def is_spiking(module: nn.Module) -> bool:
    """True for the multi-step spiking neurons of this module (any LIF subclass)."""
    return isinstance(module, LIF)
