"""``hybrid``: block-wise ANN-guided distillation (Yang et al., CVPR 2025) on rate-based BP.

The SNN and its ANN twin both consist of K stages. For each cut point k (``cuts``; default
1..K-1, the three hybrid models of a four-stage ResNet-18 in the paper's Figure 1) the hybrid
model M_k runs the SNN's stem and first k stages, maps their rate output through mapping module k
(:func:`mapping_module`) into the teacher's feature space, and finishes with the frozen teacher's
remaining stages and classifier. With z the logits of the SNN, of M_k and of the ANN:

    loss = CE(z_SNN, y) + beta * sum_k CE(z_Mk, y)
           + alpha * tau^2 * (KL(z_ANN || z_SNN) + sum_k KL(z_ANN || z_Mk))  [+ laf_lambda * L_AF]

with its gradient scaled by ``grad_scale`` as in ``ratebp``. Every branch's gradient reaches the
SNN stages through the one-step rate graph; the mapping modules are the method's own parameters
(trained, saved in the training checkpoint beside the student); the teacher is frozen. The
deployable model is the SNN alone. The stages' output channels come from the models' declared
``stage_channels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SpikeguideError
from ..models import SpikingNet
from ..models.layers import fold_apply
from .base import Method, StepResult, register_method
from .losses import guidance_loss, kd_loss
from .options import DistillOptions, LAFOptions, OptionGroup, RateOptions
from .rate import prepare_student, rate_outputs, scale_loss_gradient


@dataclass
class HybridBranchOptions(OptionGroup):
    beta: float = 1.0  # weight of each hybrid model's cross-entropy
    cuts: list[int] | None = None  # k = SNN stages before the teacher takes over; None: 1..K-1

    def check(self) -> None:
        if not self.beta >= 0:
            raise SpikeguideError(f"method.beta must be >= 0, got {self.beta}")


@dataclass
class HybridOptions(DistillOptions, LAFOptions, HybridBranchOptions, RateOptions):
    laf: bool = False


def mapping_module(channels: int) -> nn.Sequential:
    """Mapping module of one cut: a 1x1 convolution without bias, initialised to the identity
    matrix, then a batch norm with fresh statistics (weight 1, bias 0). It is not the identity at
    the start: in training the BN normalises every channel of the SNN's rate output with its batch
    mean and variance, so the teacher's tail receives the rates standardised per channel (the
    identity only up to that normalisation)."""
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
    return nn.Sequential(conv, nn.BatchNorm2d(channels))


def check_cuts(cuts: list[int] | None, num_stages: int) -> list[int]:
    if cuts is None:
        if num_stages < 2:
            raise SpikeguideError("the hybrid method needs a model of at least two stages "
                                  f"(this one has {num_stages}) or explicit method.cuts")
        return list(range(1, num_stages))
    if not cuts or sorted(set(cuts)) != cuts or not 1 <= cuts[0] <= cuts[-1] <= num_stages:
        raise SpikeguideError(f"method.cuts must be increasing stage counts in 1..{num_stages}, "
                              f"got {cuts}")
    return cuts


def declared_stage_channels(model: nn.Module, role: str) -> list[int]:
    channels = getattr(model, "stage_channels", None)
    if not channels:
        raise SpikeguideError(
            f"the hybrid method needs the {role}'s stages to declare their output channels: "
            f"{type(model).__name__} has no stage_channels (pass stage_channels= to SpikingNet in "
            "its builder; docs/extending.md)"
        )
    return channels


@register_method("hybrid")
class Hybrid(Method):
    Options = HybridOptions
    needs_teacher = True

    def __init__(self, student: SpikingNet, options=None, **kw):
        super().__init__(student, options, **kw)
        prepare_student(student)
        self.cuts = check_cuts(self.options.cuts, len(student.stages))
        student_channels = declared_stage_channels(student, "student")
        if declared_stage_channels(self.teacher, "teacher") != student_channels:
            raise SpikeguideError("the stages of the teacher and the student differ in channels: "
                                  "the teacher must be the student's ANN twin")
        self.mappings = nn.ModuleDict(
            {str(k): mapping_module(student_channels[k - 1]) for k in self.cuts})

    def branch_logits(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """The logits of each hybrid model M_k from the SNN's stage rate outputs."""
        logits = []
        for k in self.cuts:
            h = fold_apply(self.mappings[str(k)], stages[k - 1])
            _, logits_t = self.teacher.head(self.teacher.run_stages(h, k))
            logits.append(logits_t.mean(0))
        return logits

    def training_step(self, x, y) -> StepResult:
        o = self.options
        out, target = rate_outputs(self, x, return_stages=True)
        loss = self.cross_entropy(out.logits, y) + guidance_loss(o, out, target,
                                                                 self.teacher.classifier)
        for logits in self.branch_logits(out.stages):
            loss = loss + o.beta * self.cross_entropy(logits, y)
            if o.alpha:
                loss = loss + o.alpha * kd_loss(logits, target.logits, o.tau)
        return StepResult(scale_loss_gradient(loss, o, self.student, x), out.logits)
