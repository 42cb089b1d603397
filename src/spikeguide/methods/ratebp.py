"""``ratebp``: rate-based backpropagation (Yu et al., NeurIPS 2024), optionally ANN-guided.

A no-grad spiking pass over all T steps records rates and eligibilities; one rate pass of a single
step's size carries the gradient (:mod:`spikeguide.ratebp`), so training memory and backward time
do not grow with T. The loss is computed on the rate pass's logits, which equal the spiking pass's
time-averaged logits:

    loss = CE(z_SNN, y) + alpha * kd_loss(z_SNN, z_ANN, tau) + laf_lambda * L_AF  (if laf)

The teacher is needed only when ``alpha > 0`` or ``laf`` is on (:meth:`RateBP.teacher_needed`).
The learnable decay of PLIF neurons gets no gradient from ratebp: it keeps its initial value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SpikeguideError
from ..models import ModelOutput
from ..ratepass import check_model, rate_forward
from .base import Method, StepResult, register_method
from .losses import LAFOptions, check_distillation, kd_loss, laf_term


@dataclass
class RateBPOptions(LAFOptions):
    laf: bool = False
    alpha: float = 0.0  # weight of logit distillation from the teacher
    tau: float = 4.0  # its temperature

    def __post_init__(self) -> None:
        super().__post_init__()
        check_distillation(self.tau, self.alpha, "method.tau", "method.alpha")


@register_method("ratebp")
class RateBP(Method):
    Options = RateBPOptions
    return_stages = False  # whether the loss needs each stage's rate output

    @classmethod
    def teacher_needed(cls, options: RateBPOptions) -> bool:
        return cls.needs_teacher or options.alpha > 0 or options.laf

    def __init__(self, student, options=None, **kw):
        super().__init__(student, options, **kw)
        check_model(student)  # an unsupported layer or neuron fails now, not at the first step
        if self.teacher is None and self.teacher_needed(self.options):
            raise SpikeguideError(
                f"method {type(self).__name__.lower()!r} with alpha > 0 or laf = true distills "
                "from an ANN teacher: set teacher.checkpoint (or alpha = 0 and laf = false)"
            )

    def training_step(self, x, y) -> StepResult:
        out = rate_forward(self.student, x, self.return_stages)
        target = None
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher.forward_features(x)
        return StepResult(self.loss(out, target, y), out.logits)

    def loss(self, out: ModelOutput, target: ModelOutput | None, y: torch.Tensor) -> torch.Tensor:
        o = self.options
        loss = self.cross_entropy(out.logits, y)
        if o.alpha:
            loss = loss + o.alpha * kd_loss(out.logits, target.logits, o.tau)
        if o.laf:
            loss = loss + laf_term(o, out.feature, target.feature, self.teacher.classifier)
        return loss
