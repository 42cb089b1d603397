"""A run's log: one JSON line per epoch in ``metrics.jsonl`` and TensorBoard event files in ``tb/``.

``metrics.jsonl`` also holds one line per training event (``{"event": ...}``: what
``train.on_nonfinite`` did, ``training/nonfinite.py``); :func:`read_metrics` reads the epochs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from ..errors import SpikeguideError
from .scoring import Scores


@dataclass(frozen=True)
class EpochRecord:
    """What one finished epoch logs: one line of ``metrics.jsonl``."""

    epoch: int  # epochs completed
    global_step: int
    lr: float
    train_loss: float
    train_top1: float
    test: Scores | None  # None: not scored this epoch (a validation split's runs score it last)
    elapsed_s: float  # training seconds of the whole run so far, every resumed process counted
    val: Scores | None = None  # the validation split's, where the run holds one out

    def to_json(self) -> dict[str, Any]:
        """The flat line of ``metrics.jsonl``: the scores as ``test_<name>`` and ``val_<name>``."""
        line = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in SPLITS}
        for split in SPLITS:
            if getattr(self, split) is not None:
                line.update({f"{split}_{k}": v
                             for k, v in dataclasses.asdict(getattr(self, split)).items()})
        return line

    @property
    def monitored(self) -> Scores:
        """The scores a run is followed and chosen on: validation's where it holds a split out."""
        return self.val or self.test

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> EpochRecord:
        scores = {split: Scores(**{f.name: line[f"{split}_{f.name}"]
                                   for f in dataclasses.fields(Scores)})
                  if f"{split}_top1" in line else None for split in SPLITS}
        return cls(**{f.name: line[f.name] for f in dataclasses.fields(cls)
                      if f.name not in SPLITS}, **scores)


SPLITS = ("test", "val")  # the evaluated splits of a record


class RunLog:
    """Appends epoch records; on resume, forgets what the checkpoint had not reached."""

    def __init__(self, run_dir: Path, resume_epoch: int = 0, resume_step: int = 0):
        self.path = run_dir / "metrics.jsonl"
        if resume_epoch or resume_step:
            self._truncate(resume_epoch)
        # purge_step drops TensorBoard events logged after the checkpoint being resumed
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step or None)

    def _truncate(self, epoch: int) -> None:
        if self.path.exists():
            # events stay: they happened, whatever is trained again
            kept = [ln for ln in self.path.read_text().splitlines()
                    if "event" in json.loads(ln) or json.loads(ln)["epoch"] <= epoch]
            self.path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, record: EpochRecord) -> None:
        line = record.to_json()
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        for key, value in line.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "global_step"):
                self.writer.add_scalar(key.replace("_", "/", 1), value, record.global_step)
        for layer, rate in (record.val or record.test).layer_rates.items():
            self.writer.add_scalar(f"firing/{layer}", rate, record.global_step)
        self.writer.flush()

    def event(self, line: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")

    def write_step(self, global_step: int, loss: float, lr: float) -> None:
        """TensorBoard step curves: ``step/loss`` (the mean since the last point) and ``step/lr``;
        flushed with the epoch's scalars."""
        self.writer.add_scalar("step/loss", loss, global_step)
        self.writer.add_scalar("step/lr", lr, global_step)

    def close(self) -> None:
        self.writer.close()


def read_metrics(run_dir: str | Path) -> list[EpochRecord]:
    """The epoch records of a run directory (none before its first epoch ends)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                fields = json.loads(line)
                if "event" not in fields:
                    records.append(EpochRecord.from_json(fields))
            except (KeyError, TypeError, ValueError) as e:
                raise SpikeguideError(f"{path} line {number} is not an epoch record of spikeguide "
                                      f"({type(e).__name__}: {e})") from None
    return records
