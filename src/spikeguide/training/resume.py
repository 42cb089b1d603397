"""Where a run starts: from scratch, or from a checkpoint in its run directory.

``--resume`` continues from ``latest.pt``; ``--resume auto`` continues when the run directory
holds a checkpoint and starts otherwise, so that a requeued job reruns its first command
unchanged. A worker group that torchrun restarted after a failure (``--max-restarts``) continues
from its last checkpoint whatever its command line asked: its ``--overwrite`` would otherwise erase
what the failed group trained. A ``latest.pt`` that cannot be read (missing, truncated, corrupted)
falls back to ``previous.pt``, the checkpoint it replaced, with one warning line; the unreadable
file is kept aside as ``latest.pt.unreadable`` so that the next save does not rotate it into
``previous.pt``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import torch

from ..errors import SpikeguideError
from .checkpoint import LATEST, PREVIOUS, UnreadableCheckpoint, load_checkpoint
from .distributed import DistInfo

log = logging.getLogger("spikeguide")

Resume = Union[bool, Literal["auto"]]  # --resume: no, yes, or when there is a checkpoint


@dataclass(frozen=True)
class ResumePoint:
    path: Path  # the checkpoint file read
    state: dict[str, Any]


def restart_count() -> int:
    """How often torchrun has restarted this worker group (0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def after_restart(resume: Resume, overwrite: bool, dist: DistInfo) -> tuple[Resume, bool]:
    """``resume`` and ``overwrite`` as this process applies them: a restarted group resumes."""
    count = restart_count()
    if not count:
        return resume, overwrite
    if dist.is_main:
        log.warning("worker group restart %d of at most %s: continuing from the last checkpoint",
                    count, os.environ.get("TORCHELASTIC_MAX_RESTARTS", "?"))
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            log.warning("warning: torchrun shares one store across restarts, where a restarted "
                        "group can fail to connect; start torchrun with "
                        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (docs/distributed.md)")
    return "auto", False


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / LATEST).exists() or (run_dir / PREVIOUS).exists()


def wants_resume(resume: Resume, run_dir: Path) -> bool:
    """Whether the run continues: ``auto`` resolved against the run directory."""
    if resume == "auto":
        return has_checkpoint(run_dir)
    if resume and not has_checkpoint(run_dir):
        raise SpikeguideError(f"nothing to resume: {str(run_dir / LATEST)!r} does not exist")
    return bool(resume)


def read_resume_point(run_dir: Path, map_location: torch.device, dist: DistInfo) -> ResumePoint:
    """The checkpoint a resumed run continues from: ``latest.pt``, or ``previous.pt`` when
    ``latest.pt`` cannot be read."""
    latest, previous = run_dir / LATEST, run_dir / PREVIOUS
    try:
        return ResumePoint(latest, load_checkpoint(latest, map_location))
    except UnreadableCheckpoint as e:
        if not previous.is_file():
            raise
        reason = e
    point = ResumePoint(previous, load_checkpoint(previous, map_location))
    aside = latest.with_name(LATEST + ".unreadable")
    if dist.is_main:
        log.warning("warning: %s; resuming from the previous checkpoint %r instead%s", reason,
                    str(previous), f" (the unreadable file is kept as {str(aside)!r})"
                    if latest.exists() else "")
        if latest.exists():
            os.replace(latest, aside)
    return point
