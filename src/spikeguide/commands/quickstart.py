"""``spikeguide quickstart``: an ANN teacher and its SNN twin on the bundled digits, no files needed.

The SNN starts from the trained ANN's weights (the twins share parameter names) and is trained
with surrogate-gradient BPTT. The configs below are ordinary recipes: each run writes its resolved
``config.toml``, which ``spikeguide train`` accepts as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, apply_overrides, merge, parse_config
from ..training.run import train
from ..training.trainer import TrainSummary

COMMON: dict[str, Any] = {
    "model": {"name": "resnet20", "width": 0.25, "T": 4},
    "data": {"name": "digits", "batch_size": 64, "augment": {"crop_padding": 1}},
    "optim": {"name": "sgd", "lr": 0.1, "weight_decay": 5e-4, "warmup_epochs": 1},
    "train": {"seed": 0, "progress": False},
}
TEACHER = {"name": "ann", "method": {"name": "ann"}, "train": {"epochs": 12}}
STUDENT = {"name": "snn", "method": {"name": "bptt"}, "train": {"epochs": 12},
           "optim": {"lr": 0.05}, "teacher": {"init_student": True}}


@dataclass(frozen=True)
class QuickstartRun:
    cfg: Config
    summary: TrainSummary
    seconds: float  # wall time, setup included


def run_quickstart(out_dir: str = "runs/quickstart", overrides: list[str] | None = None
                   ) -> list[QuickstartRun]:
    """Train the ANN teacher, then its SNN twin initialised from it (not when a signal stopped
    the teacher)."""
    runs = []
    teacher_dir = str(Path(out_dir) / "ann")
    for part in (TEACHER, STUDENT):
        data = merge(COMMON, part, {"out_dir": out_dir})
        if part is STUDENT:
            data["teacher"]["checkpoint"] = teacher_dir
        cfg = parse_config(apply_overrides(data, list(overrides or [])))
        start = time.time()
        summary = train(cfg, overwrite=True)
        runs.append(QuickstartRun(cfg, summary, time.time() - start))
        if summary.stopped is not None:  # a signal: no student from a half-trained teacher
            break
    return runs
