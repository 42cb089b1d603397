"""Distillation losses shared by the methods that learn from an ANN teacher.

Both losses are ``tau^2 * KL(softmax(z_teacher / tau) || softmax(z_student / tau))``, averaged
over the batch (``batchmean``: the KL of each sample summed over classes, then the mean over
samples). The ``tau^2`` keeps the gradient's size roughly independent of ``tau`` (Hinton et al.
2015). Gradients flow into whichever argument carries them: pass teacher values computed under
``torch.no_grad()`` for a fixed target. The KL is computed in float32 so that a bf16/fp16 forward
pass does not round the soft targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpikeguideError


def check_distillation(tau: float, weight: float, tau_key: str, weight_key: str) -> None:
    """Config checks shared by the methods' options: a positive temperature, a weight >= 0."""
    if not tau > 0:
        raise SpikeguideError(f"{tau_key} must be positive, got {tau}")
    if not weight >= 0:
        raise SpikeguideError(f"{weight_key} must be >= 0, got {weight}")


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


@dataclass
class LAFOptions:
    """The LAF switch and its settings; a method's ``Options`` inherits them to offer LAF.

    ``laf_tau``: the KL temperature. ``laf_lambda``: the weight of L_AF beside cross-entropy.
    The EnOF paper does not state its values in the material we had; 4 is the usual KD
    temperature on CIFAR and 1 an unweighted sum (see docs/enof.md).
    """

    laf: bool = True
    laf_tau: float = 4.0
    laf_lambda: float = 1.0

    def __post_init__(self) -> None:
        check_distillation(self.laf_tau, self.laf_lambda, "method.laf_tau", "method.laf_lambda")


def laf_term(options: LAFOptions, student_feature: torch.Tensor, teacher_feature: torch.Tensor,
             classifier: nn.Module) -> torch.Tensor:
    """``laf_lambda * L_AF`` with a method's LAF options; ``classifier`` is the frozen teacher's."""
    return options.laf_lambda * laf_loss(student_feature, teacher_feature, classifier,
                                         options.laf_tau)
