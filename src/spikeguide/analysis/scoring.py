"""Accuracy and firing-rate measurement."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from ..neurons import is_spiking


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
             prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
             reduce: Callable[[list[float]], list[float]] = list) -> dict[str, Any]:
    """Top-1/top-5 accuracy (percent), mean loss and firing rates of ``model`` on ``batches``.

    ``prepare`` turns a stored batch (uint8) into the model's input (normalization); ``reduce``
    sums a list of counts over processes when each evaluated a shard.
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
    layers = list(firing.spikes)
    totals = reduce([n, loss, correct[1], correct[5]] + [firing.spikes[k] for k in layers]
                    + [firing.sites[k] for k in layers])
    n, loss, top1, top5 = totals[:4]
    spikes, sites = totals[4:4 + len(layers)], totals[4 + len(layers):]
    return {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "loss": loss / n,
            "firing_rate": sum(spikes) / sum(sites) if layers else 0.0,
            "layer_rates": {k: s / c for k, s, c in zip(layers, spikes, sites)}}
