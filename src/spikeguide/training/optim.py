"""The optimizer and the learning-rate schedule of a run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

if TYPE_CHECKING:  # config validates against the names below
    from ..config import OptimConfig

WEIGHT_DECAY_ON = ("all", "weights")
# layers whose weight (not bias) gets weight decay under optim.weight_decay_on = "weights"
DECAYED_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
Groups = list[dict[str, Any]]

# each parameter group carries its own weight decay (param_groups)
OPTIMIZERS: dict[str, Callable[[OptimConfig, Groups], torch.optim.Optimizer]] = {
    "sgd": lambda cfg, groups: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                               nesterov=cfg.nesterov),
    "adamw": lambda cfg, groups: torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas)),
}
SCHEDULES = ("cosine", "constant")


def param_groups(cfg: OptimConfig, module: nn.Module) -> Groups:
    """The trainable parameters of ``module`` in optimizer groups with their weight decay.

    ``weight_decay_on = "all"``: one group, every parameter decayed. ``"weights"``: the weights of
    convolutions and linear layers decayed, everything else (batch norm, biases, neuron
    parameters such as a PLIF's decay) not, as the official code of the rate-BP paper splits them
    (``util/util.py::split_params`` of Tab-ct/rate-based-backpropagation).
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if cfg.weight_decay_on == "all":
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    weights = {id(m.weight) for m in module.modules() if isinstance(m, DECAYED_LAYERS)}
    groups = [{"params": [p for p in params if id(p) in weights], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if id(p) not in weights], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: OptimConfig, module: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``module``'s trainable parameters (see :func:`param_groups`)."""
    return OPTIMIZERS[cfg.name](cfg, param_groups(cfg, module))


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning-rate multiplier at iteration ``step``: linear warm-up, then cosine or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
