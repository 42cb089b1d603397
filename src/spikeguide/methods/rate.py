"""The training step that ``ratebp`` and ``hybrid`` share: the student's two rate-BP passes, the
teacher's output on the same batch, and the scale of the loss gradient (``method.grad_scale``)."""

from __future__ import annotations

import torch

from ..models import ModelOutput
from ..neurons import is_spiking
from ..ratepass import check_model, rate_forward
from ..ratepass.passes import time_steps
from .base import Method
from .options import RateOptions


def prepare_student(student: torch.nn.Module) -> None:
    """Refuse now, not at the first step, a model rate-based BP cannot train (``check_model``),
    and freeze the neurons' own parameters (a PLIF's decay): the rate pass gives them no
    gradient, so they keep their values, and data-parallel training does not wait for gradients
    that never come."""
    check_model(student)
    for module in student.modules():
        if is_spiking(module):
            module.requires_grad_(False)


def rate_outputs(method: Method, x: torch.Tensor, return_stages: bool = False
                 ) -> tuple[ModelOutput, ModelOutput | None]:
    """The student's rate-pass output (one-step graph, time averages in value) and, when the
    method has a teacher, the teacher's output on the same batch (no graph)."""
    out = rate_forward(method.student, x, return_stages, method.options.conv_steps)
    if method.teacher is None:
        return out, None
    with torch.no_grad():
        return out, method.teacher.forward_features(x)


class _ScaleGradient(torch.autograd.Function):
    """The identity in value; the gradient times ``factor`` in backward."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_loss_gradient(loss: torch.Tensor, options: RateOptions, student: torch.nn.Module,
                        x: torch.Tensor) -> torch.Tensor:
    """``loss`` with its gradient scaled as ``options.grad_scale`` says: unchanged (``"bptt"``),
    or divided by the number of time steps T of this batch (``"1/T"``, the official code's
    ``CustomEvaluator``; docs/ratebp.md). The value is the loss itself either way."""
    if options.grad_scale == "bptt":
        return loss
    return _ScaleGradient.apply(loss, 1.0 / time_steps(student, x))
