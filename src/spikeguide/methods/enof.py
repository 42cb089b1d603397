"""``enof``: EnOF-SNN (Guo et al., NeurIPS 2024) on surrogate-gradient BPTT.

loss = CE(z_SNN, y) + laf_lambda * L_AF, where L_AF (:func:`.losses.laf_loss`) sends
the SNN's time-averaged output feature and the frozen ANN teacher's output feature, computed on
the same augmented batch, through the teacher's classifier and aligns the two distributions with
a temperature-scaled KL divergence. ``laf = false`` leaves plain cross-entropy (the baseline).

RepAct is a property of the model, not of the loss: it is switched by ``model.repact`` alone
(``create_model(repact=True)``), so it works with every spiking method and cannot disagree with a
method option. The four ablation rows are ``laf`` x ``model.repact``.
"""

from __future__ import annotations

import torch

from .base import Method, StepResult, register_method
from .losses import laf_term
from .options import LAFOptions


@register_method("enof")
class EnOF(Method):
    Options = LAFOptions
    needs_teacher = True  # also with laf = false (the ablation baseline); bptt is that, teacherless

    def training_step(self, x, y) -> StepResult:
        out = self.student.forward_features(x)
        loss = self.cross_entropy(out.logits, y)
        if self.options.laf:
            with torch.no_grad():
                teacher_feature = self.teacher.forward_features(x).feature
            loss = loss + laf_term(self.options, out.feature, teacher_feature,
                                   self.teacher.classifier)
        return StepResult(loss, out.logits)
