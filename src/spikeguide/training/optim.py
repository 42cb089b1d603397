"""The optimizer and the learning-rate schedule of a run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:  # config validates against the names below
    from ..config import OptimConfig

Params = list[torch.nn.Parameter]

OPTIMIZERS: dict[str, Callable[[OptimConfig, Params], torch.optim.Optimizer]] = {
    "sgd": lambda cfg, params: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                               nesterov=cfg.nesterov,
                                               weight_decay=cfg.weight_decay),
    "adamw": lambda cfg, params: torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas),
                                                   weight_decay=cfg.weight_decay),
}
SCHEDULES = ("cosine", "constant")


def build_optimizer(cfg: OptimConfig, params: Params) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.name](cfg, params)


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning-rate multiplier at iteration ``step``: linear warm-up, then cosine or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
