"""The contract of a spiking neuron: the one place its dynamics are defined.

A neuron is a module over input currents ``[T, B, ...]`` that returns spikes of the same shape;
its membrane state lives only inside one call. Its dynamics, for t = 1..T with ``u_0^+ = 0``::

    u_t   = charge(u_{t-1}^+, I_t)        the membrane before the reset
    s_t   = fire(u_t)                     the spikes (the surrogate's derivative in backward)
    u_t^+ = reset_membrane(u_t, s_t)      the membrane after the reset

Everything else reads these, or optional pieces that describe them:

* the reference loop (:func:`reference_loop`, backend ``"torch"``) runs charge, fire and reset
  step by step with autograd: every neuron has it;
* the fused kernels run the dynamics ``kernel_spec()`` describes (a spec type of
  :mod:`.kernels.spec` that some backend declares); without one the neuron runs the reference loop;
* rate-based backpropagation needs the eligibility
  ``kappa_t = (du_t/du_{t-1}^+) * a_{t-1} * kappa_{t-1} + du_t/dI_t``, ``e = mean_t g_t kappa_t``:
  ``charge_gains`` (the two derivatives of charge), ``fire_gain`` (``g_t = ds_t/du_t``, the
  surrogate's) and ``reset_gain`` (``a_t = du_t^+/du_t``); a neuron whose kernel spec is LIF's
  is recorded by the LIF fast path instead (``spikeguide.ratepass``);
* NIR export needs ``nir_node(dt)``.

An optional piece is used only when the class that defines it is at least as derived as every
class that defines the dynamics it describes (:data:`DESCRIBES`): a subclass of LIF that redefines
``reset_membrane`` and nothing else runs the reference loop, and rate-BP and NIR export refuse it,
rather than it silently keeping LIF's kernels, eligibility and NIR node.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from ..errors import SpikeguideError
from .kernels import check_backend, fused_forward, resolve_backend
from .kernels.ops import surrogate_name
from .surrogates import Surrogate, get_surrogate, spike

DYNAMICS = ("charge", "fire", "reset_membrane")
# optional piece -> the dynamics it describes
DESCRIBES = {
    "charge_gains": ("charge",),
    "fire_gain": ("fire",),
    "reset_gain": ("reset_membrane",),
    "kernel_spec": DYNAMICS,
    "nir_node": DYNAMICS,
}
RATE_PIECES = ("charge_gains", "fire_gain", "reset_gain")


class NIRNode(NamedTuple):
    """A neuron layer's NIR node: the name of a ``nir`` node class and its parameters, each a
    number or an array that broadcasts to the layer's shape per image and step."""

    kind: str  # e.g. "LIF", "IF", "CubaLIF"
    params: dict[str, Any]


def reference_loop(current: torch.Tensor, charge: Callable, fire: Callable,
                   reset_membrane: Callable) -> torch.Tensor:
    """Spikes ``[T, ...]`` of the dynamics over ``current`` ``[T, ...]``, step by step, with
    autograd through every operation."""
    u = torch.zeros_like(current[0])
    spikes = []
    for t in range(current.shape[0]):
        u = charge(u, current[t])
        s = fire(u)
        u = reset_membrane(u, s)
        spikes.append(s)
    return torch.stack(spikes)


class SpikingNeuron(nn.Module):
    """Base class of multi-step spiking neurons (see the module docstring for the contract).

    A subclass defines ``charge`` and ``reset_membrane``; ``fire`` defaults to the Heaviside step
    at ``threshold`` with the surrogate ``surrogate``. Its constructor takes ``surrogate`` (the
    model builder passes the configured one) and ``backend``, and passes them on here.

    Args:
        threshold: firing threshold of the default ``fire``.
        surrogate: a surrogate name from ``SURROGATES`` or a :class:`Surrogate` instance.
        width: the surrogate's width; None keeps the surrogate's default.
        backend: ``"auto"`` (a fused kernel when one runs the dynamics, else the reference loop),
            ``"torch"`` (the reference loop) or a named fused backend (:mod:`.kernels`).
    """

    multistep = True  # layers.TimeSequential passes [T, B, ...] to modules with this flag
    fuse_bn = "auto"  # run a batch norm before it fused with it: auto | true | false (.fuse_bn)

    def __init__(self, threshold: float = 1.0, surrogate: str | Surrogate = "atan",
                 width: float | None = None, backend: str = "auto"):
        super().__init__()
        missing = [name for name in ("charge", "reset_membrane") if missing_piece(type(self), name)]
        if missing:
            raise SpikeguideError(f"the neuron {type(self).__name__} must define "
                                  f"{' and '.join(missing)} (see docs/extending.md)")
        if not threshold > 0:
            raise SpikeguideError(f"neuron.threshold must be positive, got {threshold}")
        self.threshold = float(threshold)
        self.surrogate = get_surrogate(surrogate, width)
        self.backend = check_backend(backend)
        why = missing_piece(type(self), "kernel_spec")
        self._has_kernel_spec = why is None
        if backend not in ("auto", "torch") and why:
            raise SpikeguideError(f"no fused kernel runs the neuron {type(self).__name__} ({why}): "
                                  "use backend 'auto' or 'torch'")

    # The dynamics ----------------------------------------------------------------------------

    def charge(self, u: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """``u_t`` from the post-reset membrane ``u`` of the step before and the current ``I_t``."""
        raise NotImplementedError

    def fire(self, u: torch.Tensor) -> torch.Tensor:
        """Spikes ``s_t`` of the membrane ``u_t``; H(0) = 1."""
        return spike(u - self.threshold, self.surrogate)

    def reset_membrane(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The post-reset membrane ``u_t^+`` from ``u_t`` and the spikes ``s_t``."""
        raise NotImplementedError

    # What rate-based backpropagation needs ------------------------------------------------------

    def charge_gains(self, u: torch.Tensor, current: torch.Tensor
                     ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """``(du_t/du_{t-1}^+, du_t/dI_t)`` at the arguments of :meth:`charge`."""
        raise NotImplementedError

    def fire_gain(self, u: torch.Tensor) -> torch.Tensor:
        """``g_t = ds_t/du_t``: the surrogate derivative :meth:`fire` uses in backward."""
        return self.surrogate.derivative(u - self.threshold)

    def reset_gain(self, u: torch.Tensor, s: torch.Tensor, g: torch.Tensor) -> torch.Tensor | float:
        """``a_t = du_t^+/du_t`` at ``u_t``, ``s_t`` with ``ds_t/du_t = g_t``, as autograd
        differentiates :meth:`reset_membrane` (a detached spike contributes no ``g_t`` term)."""
        raise NotImplementedError

    # What the fused kernels and NIR export need -----------------------------------------------

    def kernel_spec(self) -> Any:
        """The dynamics as a spec a fused backend runs (:mod:`.kernels.spec`), or None."""
        return None

    def nir_node(self, dt: float) -> NIRNode:
        """The NIR node of the dynamics under time steps of ``dt``; a
        :class:`~spikeguide.errors.SpikeguideError` for settings NIR cannot express."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        spec = self.kernel_spec() if self._has_kernel_spec else None
        if spec is None or surrogate_name(spec.surrogate) is None:  # the kernels need its name
            backend = "torch"
        else:
            backend = resolve_backend(self.backend, current, type(spec))
        if backend == "torch":
            return reference_loop(current, self.charge, self.fire, self.reset_membrane)
        return fused_forward(current, *spec, backend)


_UNDEFINED_IN_BASE = ("charge", "reset_membrane", "charge_gains", "reset_gain", "kernel_spec",
                      "nir_node")


def _defined_by(cls: type, name: str) -> type:
    return next(c for c in cls.__mro__ if name in c.__dict__)


@functools.cache
def missing_piece(cls: type, piece: str) -> str | None:
    """Why the neuron class ``cls`` does not provide ``piece`` (a few words), or None if it does:
    it must define it, in a class at least as derived as those defining what it describes."""
    owner = _defined_by(cls, piece)
    if owner is SpikingNeuron and piece in _UNDEFINED_IN_BASE:
        return f"{cls.__name__} defines no {piece}"
    for name in DESCRIBES.get(piece, ()):
        dynamics_owner = _defined_by(cls, name)
        if not issubclass(owner, dynamics_owner):
            return f"{dynamics_owner.__name__} redefines {name} but not {piece}"
    return None


def is_spiking(module: nn.Module) -> bool:
    """True for spiking neuron layers (any :class:`SpikingNeuron`)."""
    return isinstance(module, SpikingNeuron)
