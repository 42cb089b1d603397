"""A run's log: one JSON line per epoch in ``metrics.jsonl`` and TensorBoard event files in ``tb/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter


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
            kept = [ln for ln in self.path.read_text().splitlines() if json.loads(ln)["epoch"] <= epoch]
            self.path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["global_step"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "global_step"):
                self.writer.add_scalar(key.replace("_", "/", 1), value, step)
        for layer, rate in record.get("test_layer_rates", {}).items():
            self.writer.add_scalar(f"firing/{layer}", rate, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
