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

import torch
from torch import nn

from ..errors import SpikeguideError
from .base import NIRNode, SpikingNeuron, reference_loop
from .kernels import LIFSpec
from .registry import register_neuron
from .surrogates import Surrogate, spike

RESETS = ("soft", "hard")


def lif_reset(u: torch.Tensor, s: torch.Tensor, threshold: float, reset: str,
              detach_reset: bool) -> torch.Tensor:
    r = s.detach() if detach_reset else s
    return u - threshold * r if reset == "soft" else u * (1 - r)


def scale_by_reset_gain(kappa: torch.Tensor, u: torch.Tensor, s: torch.Tensor, g: torch.Tensor,
                        threshold: float, reset: str, detach_reset: bool) -> torch.Tensor:
    """``kappa *= a_t`` in place and returned: the LIF reset gain ``a_t = du_t^+/du_t`` at the
    membrane ``u`` before the reset, spikes ``s`` and surrogate derivative ``g`` (docs/ratebp.md)::

        soft, detached: 1     soft: 1 - threshold * g     hard, detached: 1 - s     hard: 1 - s - u * g
    """
    if reset == "soft":
        if not detach_reset:
            kappa.addcmul_(kappa, g, value=-threshold)
    elif detach_reset:
        kappa.addcmul_(kappa, s, value=-1)
    else:
        kappa.mul_(torch.addcmul(1 - s, u, g, value=-1))
    return kappa


def lif_multistep(
    current: torch.Tensor,
    decay: float | torch.Tensor,
    threshold: float,
    reset: str,
    detach_reset: bool,
    surrogate: Surrogate,
) -> torch.Tensor:
    """Reference (eager) LIF over the leading time axis of ``current`` ``[T, ...]``."""
    return reference_loop(current, lambda u, i: decay * u + i,
                          lambda u: spike(u - threshold, surrogate),
                          lambda u, s: lif_reset(u, s, threshold, reset, detach_reset))


@register_neuron("lif")
class LIF(SpikingNeuron):
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
            (the reference loop) or ``"fused"``, ``"compiled"``, ``"triton"``; see
            :mod:`spikeguide.neurons.kernels`. All give the same spikes.
    """

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
        if reset not in RESETS:
            raise SpikeguideError(f"neuron.reset must be one of {RESETS}, got {reset!r}")
        if not 0 < decay <= 1:
            raise SpikeguideError(f"neuron.decay must be in (0, 1], got {decay}")
        super().__init__(threshold, surrogate, width, backend)
        self.reset = reset
        self.detach_reset = bool(detach_reset)
        self._init_decay(decay)

    def _init_decay(self, decay: float) -> None:
        # a Python float, not a tensor: reading a GPU tensor's value would make every forward
        # wait for the GPU
        self.decay = float(decay)

    def membrane_decay(self) -> float | torch.Tensor:
        return self.decay

    def charge(self, u, current):
        return self.membrane_decay() * u + current

    def reset_membrane(self, u, s):
        return lif_reset(u, s, self.threshold, self.reset, self.detach_reset)

    def charge_gains(self, u, current):
        return self.membrane_decay(), 1.0

    def reset_gain(self, u, s, g):
        return scale_by_reset_gain(torch.ones_like(u), u, s, g, self.threshold, self.reset,
                                   self.detach_reset)

    def kernel_spec(self) -> LIFSpec:
        return LIFSpec(self.membrane_decay(), self.threshold, self.reset, self.detach_reset,
                       self.surrogate)

    def nir_node(self, dt: float) -> NIRNode:
        """Under forward-Euler steps of ``dt``, ``u_t = decay * u_{t-1} + I_t`` is NIR's
        ``tau du/dt = -u + r I`` with ``tau = dt / (1 - decay)``, ``r = tau / dt``, ``v_leak = 0``;
        decay 1 is NIR's ``IF`` with ``r = 1``. NIR neurons reset to a potential (hard reset)."""
        if self.reset != "hard":
            raise SpikeguideError(f"NIR neurons reset to a potential; export needs reset='hard' "
                                  f"(this one is {self.reset})")
        decay = float(torch.as_tensor(self.membrane_decay()).detach())
        if decay == 1.0:
            return NIRNode("IF", {"r": 1.0, "v_threshold": self.threshold, "v_reset": 0.0})
        tau = dt / (1 - decay)
        return NIRNode("LIF", {"tau": tau, "r": tau / dt, "v_leak": 0.0,
                               "v_threshold": self.threshold, "v_reset": 0.0})

    def extra_repr(self) -> str:
        return (
            f"decay={float(self.membrane_decay()):g}, threshold={self.threshold:g}, "
            f"reset={self.reset!r}, detach_reset={self.detach_reset}, surrogate={self.surrogate}, "
            f"backend={self.backend!r}"
        )


@register_neuron("if")
class IF(LIF):
    """Integrate-and-fire: an LIF neuron without leak (decay = 1)."""

    def __init__(self, threshold: float = 1.0, reset: str = "hard", detach_reset: bool = False,
                 surrogate: str | Surrogate = "atan", width: float | None = None, decay: float = 1.0,
                 backend: str = "auto"):
        if decay != 1.0:
            raise SpikeguideError("the IF neuron has no leak: its decay is 1; use 'lif' for decay < 1")
        super().__init__(1.0, threshold, reset, detach_reset, surrogate, width, backend)


@register_neuron("plif")
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
