"""Gradient-flow diagnostics for deep SNNs and a surrogate-width sweep (Ledinauskas et al. 2020).

A deep feed-forward SNN is implicitly recurrent (over layers and time steps), so the gradient of
the loss with respect to each spiking layer's input current can grow or shrink geometrically from
the last layer back to the first; the surrogate's width sets the gain per layer.

* :func:`gradient_flow` measures, per spiking layer in forward order, the L2 norm of
  dLoss/d(input current) (a tensor hook on the neuron's input, mean over the batches) and the
  firing rate. A layer is flagged when its norm is more than ``FLAG_FACTOR`` times larger or
  smaller than the first spiking layer's.
* :func:`sweep_widths` does that for several widths from the same initial weights and batches,
  then trains each copy for a few steps on those batches (loss before and after).
* :func:`recommend` picks the width whose first-to-last gradient ratio is closest to 1 among
  those whose trial loss fell.
* :func:`diagnose` runs all of it for a recipe; :func:`plot_gradient_flow` draws norm against depth.

The loss is cross-entropy on the time-averaged logits, whatever the recipe's method.
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Config
from ..data import Augment, Dataset, make_loader
from ..errors import SpikeguideError
from ..models.base import in_mode
from ..neurons import SURROGATES, Surrogate, get_surrogate, is_spiking
from ..training.scoring import count_spikes

FLAG_FACTOR = 10.0
SWEEP_KEYS = ("surrogate.width", "surrogate.steepness")  # steepness k = 1 / width

Batch = tuple[torch.Tensor, torch.Tensor]
MakeOptimizer = Callable[[nn.Module], torch.optim.Optimizer]


@dataclass
class LayerFlow:
    name: str
    grad_norm: float  # ||dLoss / d(input current)||_2 over [T, B, ...], mean over batches
    firing_rate: float  # spikes per neuron per time step
    relative: float  # grad_norm / the first spiking layer's grad_norm

    @property
    def flagged(self) -> bool:
        return not 1 / FLAG_FACTOR <= self.relative <= FLAG_FACTOR


@dataclass
class FlowReport:
    """The gradient flow of one surrogate width, and the trial run's loss (None if not run)."""

    surrogate: str
    width: float
    layers: list[LayerFlow]
    loss_start: float
    loss_end: float | None = None

    @property
    def first_to_last(self) -> float:
        """> 1: the gradient grows on its way back to the input (explodes); < 1: it vanishes."""
        first, last = self.layers[0].grad_norm, self.layers[-1].grad_norm
        return first / last if last else math.inf

    @property
    def trend(self) -> str:
        ratio = self.first_to_last
        if math.isnan(ratio):
            return "undefined"
        if ratio > FLAG_FACTOR:
            return "exploding"
        return "vanishing" if ratio < 1 / FLAG_FACTOR else "stable"

    @property
    def flagged(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.flagged]

    @property
    def loss_fell(self) -> bool:
        return self.loss_end is not None and self.loss_end < self.loss_start  # False for NaN

    def imbalance(self) -> float:
        """|log10 first_to_last|; infinite when the ratio is not finite."""
        ratio = self.first_to_last
        return abs(math.log10(ratio)) if 0 < ratio < math.inf else math.inf


def spiking_names(model: nn.Module) -> dict[nn.Module, str]:
    names = {m: n for n, m in model.named_modules() if is_spiking(m)}
    if not names:
        raise SpikeguideError("the model has no spiking neurons; diagnose needs an SNN "
                              "(a recipe whose method trains a spiking student)")
    return names


def gradient_flow(model: nn.Module, batches: Sequence[Batch]) -> tuple[list[LayerFlow], float]:
    """Per spiking layer, in forward order: input-current gradient norm and firing rate; and the
    mean loss. Runs in training mode (batch norm on batch statistics, as in training) and leaves
    the model's parameter gradients cleared."""
    names = spiking_names(model)
    norms: dict[str, list[float]] = defaultdict(list)

    def pre_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        name = names[module]
        if inputs[0].requires_grad:  # else no gradient reaches this layer: its norm stays NaN
            # float64: a float32 sum of squares overflows long before the gradient itself does
            inputs[0].register_hook(lambda g: norms[name].append(float(g.double().norm())))

    handles = [m.register_forward_pre_hook(pre_hook) for m in names]
    losses = []
    try:
        with in_mode(model, training=True), count_spikes(model) as spikes:
            for x, y in batches:
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                losses.append(loss.item())
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    order = list(spikes)  # first-call order = depth
    mean_norm = {n: sum(norms[n]) / len(norms[n]) if norms[n] else math.nan for n in order}
    first = mean_norm[order[0]]
    layers = [LayerFlow(n, mean_norm[n], spikes[n].rate, mean_norm[n] / first if first else math.inf)
              for n in order]
    return layers, sum(losses) / len(losses)


def surrogate_name(surrogate: Surrogate) -> str:
    return next((n for n in SURROGATES.names() if SURROGATES.get(n) is type(surrogate)),
                type(surrogate).__name__)


def set_surrogate(model: nn.Module, surrogate: Surrogate) -> None:
    for module in spiking_names(model):
        module.surrogate = surrogate


def trial_loss(model: nn.Module, batches: Sequence[Batch], steps: int,
               make_optimizer: MakeOptimizer) -> float:
    """Train ``steps`` steps cycling through ``batches``; the mean loss on them afterwards."""
    optimizer = make_optimizer(model)
    model.train()
    for step in range(steps):
        x, y = batches[step % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        return sum(float(F.cross_entropy(model(x), y)) for x, y in batches) / len(batches)


def sweep_widths(model: nn.Module, batches: Sequence[Batch], widths: Sequence[float] | None = None,
                 *, steps: int = 0,
                 make_optimizer: MakeOptimizer | None = None) -> list[FlowReport]:
    """The gradient flow of ``model`` for each surrogate width (None: the configured one), each
    from a copy of the same initial weights; with ``steps`` > 0 each copy is then trained that
    many steps on ``batches`` with ``make_optimizer(model)`` (default: SGD, lr 0.1, momentum
    0.9)."""
    configured = next(iter(spiking_names(model))).surrogate
    make_optimizer = make_optimizer or (
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    reports = []
    for width in widths or [configured.width]:
        copy_ = copy.deepcopy(model)
        set_surrogate(copy_, get_surrogate(configured, width))
        layers, loss = gradient_flow(copy_, batches)
        report = FlowReport(surrogate_name(configured), float(width), layers, loss)
        if steps:
            report.loss_end = trial_loss(copy_, batches, steps, make_optimizer)
        reports.append(report)
    return reports


def recommend(reports: Sequence[FlowReport]) -> FlowReport | None:
    """The report with the first-to-last ratio closest to 1 (log scale) among those whose trial
    loss fell; None when none fell, no trial was run, or there is only one width."""
    if len(reports) < 2:
        return None
    candidates = [r for r in reports if r.loss_fell and r.imbalance() < math.inf]
    return min(candidates, key=FlowReport.imbalance, default=None)


def parse_sweep(text: str) -> list[float]:
    """``surrogate.width=0.1,0.5,2`` or ``surrogate.steepness=10,2,0.5`` -> widths."""
    key, sep, values = text.partition("=")
    if not sep or key.strip() not in SWEEP_KEYS:
        raise SpikeguideError(f"--sweep expects {SWEEP_KEYS[0]}=V1,V2,... or "
                              f"{SWEEP_KEYS[1]}=K1,K2,..., got {text!r}")
    try:
        numbers = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise SpikeguideError(
            f"--sweep values must be numbers separated by commas, got {values!r}") from None
    if not numbers or not all(0 < v < math.inf for v in numbers):
        raise SpikeguideError(f"--sweep values must be positive numbers, got {values!r}")
    return numbers if key.strip() == SWEEP_KEYS[0] else [1 / k for k in numbers]


def layer_rows(reports: Sequence[FlowReport]) -> list[dict[str, str]]:
    """One row per spiking layer: its firing rate (the forward pass does not depend on the
    surrogate) and its gradient norm for each width, ``!`` where flagged."""
    rows = []
    for i, layer in enumerate(reports[0].layers):
        row = {"layer": layer.name, "firing rate": f"{layer.firing_rate:.3f}"}
        for r in reports:
            flow = r.layers[i]
            row[f"w={r.width:g}"] = f"{flow.grad_norm:.2e}" + ("!" if flow.flagged else "")
        rows.append(row)
    return rows


def summary_rows(reports: Sequence[FlowReport]) -> list[dict[str, str]]:
    best = recommend(reports)
    rows = []
    for r in reports:
        row = {"surrogate": r.surrogate, "width": f"{r.width:g}",
               "first/last": f"{r.first_to_last:.3g}",
               "flagged": f"{len(r.flagged)}/{len(r.layers)}", "trend": r.trend,
               "loss start": f"{r.loss_start:.4f}"}
        if r.loss_end is not None:
            row["loss end"] = f"{r.loss_end:.4f}"
        if best is not None:
            row["recommended"] = "<-" if r is best else ""
        rows.append(row)
    return rows


def plot_gradient_flow(reports: Sequence[FlowReport], path: Path, title: str = "") -> Path:
    """Gradient norm against depth (log scale), one line per width; flagged layers marked x."""
    from .report import plt, save

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in reports:
        depth = range(1, len(r.layers) + 1)
        (line,) = ax.plot(depth, [layer.grad_norm for layer in r.layers], lw=1.5,
                          label=f"{r.surrogate} w={r.width:g} (first/last {r.first_to_last:.2g})")
        flagged = [(i, layer.grad_norm) for i, layer in zip(depth, r.layers) if layer.flagged]
        if flagged:
            ax.plot(*zip(*flagged), "x", color=line.get_color(), ms=4)
    ax.set(yscale="log", xlabel="spiking layer (depth, input to output)",
           ylabel="||dL / d input current||", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, path)


def recipe_batches(cfg: Config, n: int) -> tuple[list[Batch], Dataset]:
    """The first ``n`` training batches of the recipe (normalized, not augmented) and the
    training set they come from."""
    from ..training.build import build_datasets
    from ..training.distributed import resolve_device

    device = resolve_device(cfg.train.device)
    train_set, _ = build_datasets(cfg, device)
    loader = make_loader(train_set, cfg.data.batch_size, shuffle=True, drop_last=True,
                         seed=cfg.train.seed, device=device)
    normalize = Augment(mean=train_set.mean, std=train_set.std).normalize
    return [(normalize(x), y) for (x, y), _ in zip(loader, range(n))], train_set


def diagnose(cfg: Config, widths: Sequence[float] | None = None, *, batches: int = 2,
             steps: int = 10, out: str | Path | None = None) -> tuple[list[FlowReport], Path]:
    """Gradient flow of the recipe's SNN for each width (None: the configured surrogate and
    width) on its first training batches, with a ``steps``-step trial run of the recipe's
    optimizer (constant learning rate). The SNN starts from the random initialization ``train``
    uses (``teacher.init_student`` is not applied). Writes ``gradient_flow.png`` and
    ``diagnose.json`` to ``out`` (default ``OUT_DIR/NAME_diagnose``); returns the reports and the
    plot's path."""
    from ..methods import METHODS
    from ..training.build import build_model
    from ..training.optim import build_optimizer

    if batches < 1 or steps < 0:
        raise SpikeguideError("diagnose needs at least 1 batch and 0 or more steps")
    data, train_set = recipe_batches(cfg, batches)
    torch.manual_seed(cfg.train.seed)  # the initial weights train would start from
    model = build_model(cfg, train_set.num_classes, train_set.in_channels,
                        METHODS.get(cfg.method.name).spiking_student).to(data[0][0].device)
    reports = sweep_widths(model, data, widths, steps=steps,
                           make_optimizer=lambda m: build_optimizer(cfg.optim, m))
    out = Path(out) if out is not None else Path(cfg.out_dir) / f"{cfg.name}_diagnose"
    out.mkdir(parents=True, exist_ok=True)
    title = (f"{cfg.model.name} (width {cfg.model.width:g}), T={cfg.model.T}, {cfg.data.name}, "
             f"{len(data)} batches of {cfg.data.batch_size}")
    plot = plot_gradient_flow(reports, out / "gradient_flow.png", title)
    best = recommend(reports)
    summary = {"title": title, "recommended_width": best.width if best else None,
               "reports": [{**asdict(r), "first_to_last": r.first_to_last, "trend": r.trend}
                           for r in reports]}
    (out / "diagnose.json").write_text(json.dumps(summary, indent=1))
    return reports, plot
