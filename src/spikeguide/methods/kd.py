"""``kd``: vanilla logit distillation from the ANN teacher into the SNN.

loss = CE(z_SNN, y) + alpha * tau^2 * KL(softmax(z_ANN / tau) || softmax(z_SNN / tau)), with
z_SNN the student's time-averaged logits and z_ANN the frozen teacher's logits on the same
augmented batch. The baseline EnOF's LAF is compared against (see docs/enof.md).
"""

from __future__ import annotations

import torch

from .base import Method, StepResult, register_method
from .losses import kd_loss
from .options import DistillOptions


@register_method("kd")
class KD(Method):
    Options = DistillOptions
    needs_teacher = True

    def training_step(self, x, y) -> StepResult:
        logits = self.student(x)
        with torch.no_grad():
            target = self.teacher(x)
        loss = self.cross_entropy(logits, y)
        loss = loss + self.options.alpha * kd_loss(logits, target, self.options.tau)
        return StepResult(loss, logits)
