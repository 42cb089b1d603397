"""Accuracy and firing-rate measurement."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from .neuron import is_spiking


def topk_correct(logits: torch.Tensor, y: torch.Tensor, ks: Iterable[int]) -> dict[int, int]:
    """Number of samples whose label is among the top-k logits, for each k."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == y[:, None]
    return {k: int(hits[:, :k].any(1).sum()) for k in ks}


class FiringRates:
    """Spike counts per spiking layer, collected by forward hooks while in a ``with`` block."""

    def __init__(self) -> None:
        self.spikes: dict[str, float] = defaultdict(float)
        self.sites: dict[str, int] = defaultdict(int)  # neuron-steps seen

    def rates(self) -> dict[str, float]:
        return {name: self.spikes[name] / self.sites[name] for name in self.spikes}

    def mean(self) -> float:
        """Spikes per neuron per step over the whole network."""
        sites = sum(self.sites.values())
        return sum(self.spikes.values()) / sites if sites else 0.0


@contextmanager
def record_firing(model: nn.Module) -> Iterator[FiringRates]:
    record = FiringRates()

    def hook(name: str) -> Callable:
        def fn(module, inputs, output):
            record.spikes[name] += float(output.detach().sum())
            record.sites[name] += output.numel()
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if is_spiking(m)]
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             prepare: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
    """Top-1/top-5 accuracy (percent), mean loss and mean firing rate of ``model`` on ``batches``.

    ``prepare`` turns a stored batch (uint8) into the model's input (normalization).
    """
    was_training = model.training
    model.eval()
    n = loss = 0.0
    correct = {1: 0, 5: 0}
    with record_firing(model) as firing:
        for x, y in batches:
            logits = model(prepare(x)).float()
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            for k, c in topk_correct(logits, y, (1, 5)).items():
                correct[k] += c
            n += len(y)
    model.train(was_training)
    return {"top1": 100 * correct[1] / n, "top5": 100 * correct[5] / n, "loss": loss / n,
            "firing_rate": firing.mean(), "layer_rates": firing.rates()}
