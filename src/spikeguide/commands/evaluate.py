"""Evaluating a finished run: accuracy, firing rates, synaptic operations and energy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis.activity import ActivityReport, activity_report, plot_firing_rates
from ..analysis.scoring import evaluate
from ..config import Config, apply_overrides, parse_config, to_dict
from ..data.loader import normalized_batches
from ..models import SpikingNet
from ..training.build import build_test_set, load_model
from ..training.checkpoint import find_checkpoint
from ..training.distributed import resolve_device


@dataclass
class Evaluation:
    model: SpikingNet
    cfg: Config
    result: dict[str, Any]  # metrics.evaluate on the whole test split
    activity: ActivityReport | None  # SNNs only
    plot: Path | None  # firing rate per layer, beside the checkpoint


def evaluate_run(path: str | Path, overrides: list[str] = (), prefer: str = "best",
                 energy_batches: int | None = 4) -> Evaluation:
    """Load a run's checkpoint, test it, and for an SNN count its activity and energy on the
    first ``energy_batches`` test batches (None: all)."""
    model, cfg, _ = load_model(path, prefer)
    if overrides:
        cfg = parse_config(apply_overrides(to_dict(cfg), list(overrides)))
    device = resolve_device(cfg.train.device)
    test_set = build_test_set(cfg, device)
    model = model.to(device)
    result = evaluate(model, normalized_batches(test_set, cfg.data.eval_batch_size, device))
    activity = plot = None
    if model.spiking:
        batches = normalized_batches(test_set, cfg.data.eval_batch_size, device)
        activity = activity_report(model, batches, max_batches=energy_batches)
        plot = find_checkpoint(path, prefer).parent / "firing_rate_per_layer.png"
        plot_firing_rates(activity, plot)
    return Evaluation(model, cfg, result, activity, plot)
