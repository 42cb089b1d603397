"""``ratebp``: rate-based backpropagation (Yu et al., NeurIPS 2024), optionally ANN-guided.

A no-grad spiking pass over all T steps records rates and eligibilities; one rate pass of a single
step's size carries the gradient (:mod:`spikeguide.ratepass`), so training memory and backward
time do not grow with T. The loss is computed on the rate pass's logits, which equal the spiking
pass's time-averaged logits:

    loss = CE(z_SNN, y) + alpha * kd_loss(z_SNN, z_ANN, tau) + laf_lambda * L_AF  (if laf)

with its gradient scaled by ``grad_scale`` (:func:`.rate.scale_loss_gradient`). The teacher is
needed only when ``alpha > 0`` or ``laf`` is on (:meth:`RateBP.teacher_needed`). The learnable
decay of PLIF neurons gets no gradient from ratebp: it keeps its initial value.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Method, StepResult, register_method
from .losses import guidance_loss
from .options import DistillOptions, LAFOptions, RateOptions
from .rate import prepare_student, rate_outputs, scale_loss_gradient


@dataclass
class RateBPOptions(DistillOptions, LAFOptions, RateOptions):
    alpha: float = 0.0  # logit distillation off unless asked for
    laf: bool = False


@register_method("ratebp")
class RateBP(Method):
    Options = RateBPOptions

    @classmethod
    def teacher_needed(cls, options: RateBPOptions) -> bool:
        return options.alpha > 0 or options.laf

    def __init__(self, student, options=None, **kw):
        super().__init__(student, options, **kw)
        prepare_student(student)

    def training_step(self, x, y) -> StepResult:
        out, target = rate_outputs(self, x)
        classifier = self.teacher.classifier if self.teacher is not None else None
        loss = self.cross_entropy(out.logits, y) + guidance_loss(self.options, out, target,
                                                                 classifier)
        return StepResult(scale_loss_gradient(loss, self.options, self.student, x), out.logits)
