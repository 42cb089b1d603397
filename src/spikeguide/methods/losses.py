"""Losses shared by the methods that learn from an ANN teacher.

The distillation losses are ``tau^2 * KL(softmax(z_teacher / tau) || softmax(z_student / tau))``,
averaged over the batch (``batchmean``: the KL of each sample summed over classes, then the mean
over samples). The ``tau^2`` keeps the gradient's size roughly independent of ``tau`` (Hinton et
al. 2015). Gradients flow into whichever argument carries them: pass teacher values computed under
``torch.no_grad()`` for a fixed target. The KL is computed in float32 so that a bf16/fp16 forward
pass does not round the soft targets.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..models import ModelOutput
from .options import LAFOptions


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            tau: float) -> torch.Tensor:
    """Vanilla logit distillation: ``tau^2 * KL(p_teacher || p_student)`` at temperature ``tau``."""
    log_p_student = F.log_softmax(student_logits.float() / tau, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / tau, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return tau * tau * kl


def laf_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor,
             classifier: nn.Module, tau: float) -> torch.Tensor:
    """EnOF's L_AF: both output features go through the teacher's (frozen) ``classifier`` W,
    then ``tau^2 * KL(softmax(W f_teacher / tau) || softmax(W f_student / tau))``.

    ``student_feature`` is the SNN's pooled pre-classifier feature averaged over time ``[B, D]``;
    ``teacher_feature`` the ANN's pooled feature on the same batch ``[B, D]``. The student's
    gradient passes through W; W itself is not trained (its parameters must not require grad).
    """
    return kd_loss(classifier(student_feature), classifier(teacher_feature), tau)


def laf_term(options: LAFOptions, student_feature: torch.Tensor, teacher_feature: torch.Tensor,
             classifier: nn.Module) -> torch.Tensor:
    """``laf_lambda * L_AF`` with a method's LAF options; ``classifier`` is the frozen teacher's."""
    return options.laf_lambda * laf_loss(student_feature, teacher_feature, classifier,
                                         options.laf_tau)


class GuidanceOptions(Protocol):
    """What :func:`guidance_loss` reads: the fields of :class:`DistillOptions` and
    :class:`LAFOptions` (the options of ``ratebp`` and ``hybrid`` offer both groups)."""

    alpha: float
    tau: float
    laf: bool
    laf_tau: float
    laf_lambda: float


def guidance_loss(options: GuidanceOptions, student: ModelOutput, teacher: ModelOutput | None,
                  classifier: nn.Module | None) -> torch.Tensor | float:
    """The teacher's terms beside cross-entropy, ``alpha * kd_loss(z_SNN, z_ANN, tau)`` and, if
    ``laf``, ``laf_lambda * L_AF``; 0 when both are off. ``classifier`` is the teacher's."""
    loss: torch.Tensor | float = 0.0
    if options.alpha:
        loss = loss + options.alpha * kd_loss(student.logits, teacher.logits, options.tau)
    if options.laf:
        loss = loss + laf_term(options, student.feature, teacher.feature, classifier)
    return loss
