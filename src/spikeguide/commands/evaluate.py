"""Evaluating a finished run: accuracy, firing rates, synaptic operations and energy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..analysis.activity import ActivityReport, activity_report, plot_firing_rates
from ..config import Config
from ..data.loader import normalized_batches
from ..errors import SpikeguideError
from ..models import SpikingNet
from ..training.build import build_test_set, check_frames, load_model
from ..training.checkpoint import find_checkpoint
from ..training.distributed import resolve_device
from ..training.scoring import Scores, score_model

# What ``spikeguide eval --set`` may change: properties of the evaluation (the model is rebuilt
# with them and gets the run's weights). Anything else would change the trained model or its data,
# and the printed result would not be the run's.
EVAL_OVERRIDES = ("model.T", "neuron.threshold", "neuron.backend", "data.eval_batch_size",
                  "data.test_subset", "data.root", "train.device")


@dataclass
class Evaluation:
    model: SpikingNet
    cfg: Config  # the run's config with the overrides applied: what was evaluated
    scores: Scores  # on the whole test split
    activity: ActivityReport | None  # SNNs only
    plot: Path | None  # firing rate per layer, beside the checkpoint


def check_eval_overrides(overrides: Sequence[str]) -> None:
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in EVAL_OVERRIDES:
            raise SpikeguideError(f"eval cannot apply --set {key}: it would not evaluate this run; "
                                  f"eval can override {', '.join(EVAL_OVERRIDES)}")


def evaluate_run(path: str | Path, overrides: Sequence[str] = (), prefer: str = "best",
                 energy_batches: int | None = 4) -> Evaluation:
    """Load a run's checkpoint, test it, and for an SNN count its activity and energy on the
    first ``energy_batches`` test batches (None: all). ``overrides`` (``key=value``, keys from
    :data:`EVAL_OVERRIDES`) change how the run is evaluated, e.g. at another T."""
    check_eval_overrides(overrides)
    model, cfg, _ = load_model(path, prefer, overrides)
    device = resolve_device(cfg.train.device)
    test_set = build_test_set(cfg, device)
    check_frames(cfg, test_set)  # event data: model.T must be its frame count
    model = model.to(device)
    scores = score_model(model, normalized_batches(test_set, cfg.data.eval_batch_size, device))
    activity = plot = None
    if model.spiking:
        batches = normalized_batches(test_set, cfg.data.eval_batch_size, device)
        activity = activity_report(model, batches, max_batches=energy_batches)
        # an evaluation with overrides gets its own plot beside the run's
        suffix = "".join(f"_{item.replace('=', '-')}" for item in overrides)
        plot = find_checkpoint(path, prefer).parent / f"firing_rate_per_layer{suffix}.png"
        plot_firing_rates(activity, plot)
    return Evaluation(model, cfg, scores, activity, plot)
