"""``kd``: vanilla logit distillation from the ANN teacher into the SNN.

loss = CE(z_SNN, y) + alpha * tau^2 * KL(softmax(z_ANN / tau) || softmax(z_SNN / tau)), with
z_SNN the student's time-averaged logits and z_ANN the frozen teacher's logits on the same
augmented batch. The baseline EnOF's LAF is compared against (see docs/enof.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, StepResult, register_method
from .losses import check_distillation, kd_loss


@dataclass
class KDOptions:
    alpha: float = 1.0  # weight of the KL term beside cross-entropy
    tau: float = 4.0  # temperature

    def __post_init__(self) -> None:
        check_distillation(self.tau, self.alpha, "method.tau", "method.alpha")


@register_method("kd")
class KD(Method):
    Options = KDOptions
    needs_teacher = True

    def training_step(self, x, y) -> StepResult:
        logits = self.student(x)
        with torch.no_grad():
            target = self.teacher(x)
        loss = self.cross_entropy(logits, y)
        loss = loss + self.options.alpha * kd_loss(logits, target, self.options.tau)
        return StepResult(loss, logits)
