"""Surrogate gradients: the backward pass of the spike's Heaviside step.

The width of the surrogate is the knob that keeps deep SNNs trainable (Ledinauskas et al. 2020).
"""

from __future__ import annotations

import math

import torch

from ..errors import SpikeguideError
from ..registry import Registry


class Surrogate:
    """A surrogate derivative of the Heaviside step, parametrized by its width.

    Every surrogate here integrates to 1 over the real line (it approximates the Dirac delta,
    the true derivative of the step), so changing ``width`` changes how far from the threshold
    gradient flows, not the total gradient mass. For the smooth ones the steepness is
    ``k = 1 / width``. The defaults all have a peak value of 1 at the threshold.
    """

    name: str = ""
    default_width: float = 1.0

    def __init__(self, width: float | None = None):
        width = self.default_width if width is None else float(width)
        if not width > 0 or not math.isfinite(width):
            raise SpikeguideError(f"surrogate width must be a positive number, got {width}")
        self.width = width

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """dH/dx at ``x = u - threshold``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(width={self.width:g})"


SURROGATES: Registry[type[Surrogate]] = Registry("surrogate")


@SURROGATES.register("rectangle")
class Rectangle(Surrogate):
    """1/w on |x| < w/2, else 0."""

    default_width = 1.0

    def derivative(self, x):
        return (x.abs() < self.width / 2).to(x.dtype) / self.width


@SURROGATES.register("triangle")
class Triangle(Surrogate):
    """(1/w) * max(0, 1 - |x|/w): support [-w, w]."""

    default_width = 1.0

    def derivative(self, x):
        return (1 - x.abs() / self.width).clamp_min(0) / self.width


@SURROGATES.register("sigmoid")
class Sigmoid(Surrogate):
    """d/dx sigmoid(k x) = k * s * (1 - s), k = 1/w."""

    default_width = 0.25

    def derivative(self, x):
        s = torch.sigmoid(x / self.width)
        return s * (1 - s) / self.width


@SURROGATES.register("atan")
class ATan(Surrogate):
    """d/dx [atan(pi/2 * k x) / pi + 1/2] = (k/2) / (1 + (pi/2 * k x)^2), k = 1/w."""

    default_width = 0.5

    def derivative(self, x):
        k = 1 / self.width
        return (k / 2) / (1 + (math.pi / 2 * k * x) ** 2)


@SURROGATES.register("fast_sigmoid")
class FastSigmoid(Surrogate):
    """SuperSpike's fast sigmoid, normalized: (k/2) / (1 + k|x|)^2, k = 1/w."""

    default_width = 0.5

    def derivative(self, x):
        k = 1 / self.width
        return (k / 2) / (1 + k * x.abs()) ** 2


def get_surrogate(surrogate: str | Surrogate = "atan", width: float | None = None) -> Surrogate:
    """A surrogate instance from its registered name (and width), or the instance itself."""
    if isinstance(surrogate, Surrogate):
        if width is not None:
            return type(surrogate)(width)
        return surrogate
    return SURROGATES.get(surrogate)(width)


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.derivative(x), None


def spike(x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """Heaviside step of ``x`` (1 where x >= 0) with the surrogate's derivative in backward."""
    return _SpikeFunction.apply(x, surrogate)
