"""``hybrid``: block-wise ANN-guided distillation (Yang et al., CVPR 2025) on rate-based BP.

For each cut point k (``cuts``; default: after every stage) the hybrid model M_k runs the SNN's
stem and first k stages, maps their rate output through mapping module k (a 1x1 convolution with
BN, initialised to the identity) into the teacher's feature space, and finishes with the frozen
teacher's remaining stages and classifier. With z the logits of the SNN, of M_k and of the ANN:

    loss = CE(z_SNN, y) + beta * sum_k CE(z_Mk, y)
           + alpha * tau^2 * (KL(z_ANN || z_SNN) + sum_k KL(z_ANN || z_Mk))  [+ laf_lambda * L_AF]

Every branch's gradient reaches the SNN stages through the one-step rate graph; the mapping
modules are the method's own parameters (trained, saved in the training checkpoint beside the
student); the teacher is frozen. The deployable model is the SNN alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SpikeguideError
from ..models import ModelOutput, SpikingNet
from ..models.layers import fold_apply
from .base import register_method
from .losses import kd_loss
from .ratebp import RateBP, RateBPOptions


@dataclass
class HybridOptions(RateBPOptions):
    alpha: float = 1.0
    beta: float = 1.0  # weight of each hybrid model's cross-entropy
    cuts: list[int] | None = None  # k = SNN stages before the teacher takes over; None: all

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta >= 0:
            raise SpikeguideError(f"method.beta must be >= 0, got {self.beta}")


def stage_channels(stage: nn.Module) -> int:
    """Output channels of a stage: those of its last batch norm (every zoo stage ends in conv-BN
    branches before its activation)."""
    bns = [m for m in stage.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise SpikeguideError(f"cannot tell the output channels of stage {type(stage).__name__}: "
                              "the hybrid method needs stages ending in conv + BN")
    return bns[-1].num_features


def mapping_module(channels: int) -> nn.Sequential:
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
    return nn.Sequential(conv, nn.BatchNorm2d(channels))


def check_cuts(cuts: list[int] | None, num_stages: int) -> list[int]:
    if cuts is None:
        return list(range(1, num_stages + 1))
    if not cuts or sorted(set(cuts)) != cuts or not 1 <= cuts[0] <= cuts[-1] <= num_stages:
        raise SpikeguideError(f"method.cuts must be increasing stage counts in 1..{num_stages}, "
                              f"got {cuts}")
    return cuts


@register_method("hybrid")
class Hybrid(RateBP):
    Options = HybridOptions
    needs_teacher = True
    return_stages = True

    def __init__(self, student: SpikingNet, options=None, **kw):
        super().__init__(student, options, **kw)
        self.cuts = check_cuts(self.options.cuts, len(student.stages))
        self.mappings = nn.ModuleDict()
        for k in self.cuts:
            channels = stage_channels(student.stages[k - 1])
            if stage_channels(self.teacher.stages[k - 1]) != channels:
                raise SpikeguideError(f"stage {k} of the teacher and the student differ in "
                                      "channels: the teacher must be the student's ANN twin")
            self.mappings[str(k)] = mapping_module(channels)

    def branch_logits(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """The logits of each hybrid model M_k from the SNN's stage rate outputs."""
        logits = []
        for k in self.cuts:
            h = fold_apply(self.mappings[str(k)], stages[k - 1])
            _, logits_t = self.teacher.head(self.teacher.run_stages(h, k))
            logits.append(logits_t.mean(0))
        return logits

    def loss(self, out: ModelOutput, target: ModelOutput, y: torch.Tensor) -> torch.Tensor:
        o = self.options
        loss = super().loss(out, target, y)
        for logits in self.branch_logits(out.stages):
            loss = loss + o.beta * self.cross_entropy(logits, y)
            if o.alpha:
                loss = loss + o.alpha * kd_loss(logits, target.logits, o.tau)
        return loss
