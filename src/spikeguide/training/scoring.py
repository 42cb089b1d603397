"""Accuracy and firing-rate measurement."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from ..models.base import in_mode
from ..neurons import is_spiking


def topk_correct(logits: torch.Tensor, y: torch.Tensor, ks: Iterable[int]) -> dict[int, int]:
    """Number of samples whose label is among the top-k logits, for each k."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == y[:, None]
    return {k: int(hits[:, :k].any(1).sum()) for k in ks}


@dataclass
class LayerSpikes:
    """One spiking layer's spikes over the inputs seen, for firing rates."""

    spikes: float = 0.0
    sites: int = 0  # neuron-steps seen
    neurons: int = 0  # neurons per image and time step

    @property
    def rate(self) -> float:
        return self.spikes / self.sites


@contextmanager
def count_spikes(model: nn.Module) -> Iterator[dict[str, LayerSpikes]]:
    """Spikes of every spiking layer (by qualified name, in first-call order) while in the block."""
    counts: dict[str, LayerSpikes] = {}

    def hook(name: str) -> Callable:
        def fn(module, inputs, output):  # output [T, B, ...]
            layer = counts.setdefault(name, LayerSpikes(neurons=output[0, 0].numel()))
            layer.spikes += float(output.detach().sum(dtype=torch.float64))
            layer.sites += output.numel()
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if is_spiking(m)]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class Scores:
    """A model's results on a split: accuracies in percent, mean loss, firing rates."""

    top1: float
    top5: float
    loss: float
    firing_rate: float | None  # spikes per neuron per step over all spiking layers; None: an ANN
    layer_rates: dict[str, float]


@torch.no_grad()
def score_model(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                reduce: Callable[[list[float]], list[float]] = list) -> Scores:
    """Top-1/top-5 accuracy (percent), mean loss and firing rates of ``model`` on ``batches``.

    ``prepare`` turns a stored batch (uint8) into the model's input (normalization); ``reduce``
    sums a list of counts over processes when each evaluated a shard.
    """
    n = loss = 0.0
    correct = {1: 0, 5: 0}
    with in_mode(model, training=False), count_spikes(model) as spikes:
        for x, y in batches:
            logits = model(prepare(x)).float()
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            for k, c in topk_correct(logits, y, (1, 5)).items():
                correct[k] += c
            n += len(y)
    layers = list(spikes)
    totals = reduce([n, loss, correct[1], correct[5]] + [spikes[k].spikes for k in layers]
                    + [spikes[k].sites for k in layers])
    n, loss, top1, top5 = totals[:4]
    fired, sites = totals[4:4 + len(layers)], totals[4 + len(layers):]
    return Scores(top1=100 * top1 / n, top5=100 * top5 / n, loss=loss / n,
                  firing_rate=sum(fired) / sum(sites) if layers else None,
                  layer_rates={k: f / c for k, f, c in zip(layers, fired, sites)})
