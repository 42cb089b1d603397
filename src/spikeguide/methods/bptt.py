"""``bptt``: surrogate-gradient backpropagation through time.

The loss is cross-entropy on the time-averaged logits, or with ``tet = true`` the TET loss
(Deng et al. 2022): the mean over steps of the per-step cross-entropy, plus ``tet_lambda`` times
the mean squared distance of the per-step logits to ``tet_phi``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, StepResult, register_method


@dataclass
class BPTTOptions:
    tet: bool = False
    tet_lambda: float = 0.0
    tet_phi: float = 1.0


def tet_loss(method: Method, logits_t: torch.Tensor, y: torch.Tensor, lam: float,
             phi: float) -> torch.Tensor:
    T = logits_t.shape[0]
    ce = method.cross_entropy(logits_t.flatten(0, 1), y.repeat(T))
    if lam == 0:
        return ce
    mse = (logits_t - phi).pow(2).mean()
    return (1 - lam) * ce + lam * mse


@register_method("bptt")
class BPTT(Method):
    Options = BPTTOptions

    def training_step(self, x, y) -> StepResult:
        out = self.student.forward_features(x)
        if self.options.tet:
            loss = tet_loss(self, out.logits_t, y, self.options.tet_lambda, self.options.tet_phi)
        else:
            loss = self.cross_entropy(out.logits, y)
        return StepResult(loss, out.logits)
