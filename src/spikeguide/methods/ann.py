"""``ann``: train the ANN twin (the teacher) with cross-entropy."""

from __future__ import annotations

from .base import Method, StepResult, register_method


@register_method("ann")
class ANN(Method):
    spiking_student = False

    def training_step(self, x, y) -> StepResult:
        logits = self.student(x)
        return StepResult(self.cross_entropy(logits, y), logits)
