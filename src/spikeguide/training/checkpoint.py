"""Checkpoint files: written atomically, read without running code, checked when read.

A crash while saving leaves the previous checkpoint intact (the new one is written to a temporary
file in the same folder, flushed, then renamed over the old one, and the folder is fsynced after
each rename so that the rename survives a power cut). A disk that fills up part-way through a save
stops the run with one line and leaves the files as they were. ``latest.pt`` keeps its
predecessor beside it as ``previous.pt``, the fallback when ``latest.pt`` cannot be read
(``training/resume.py``). Loading uses ``torch.load(weights_only=True)``, so a file whose
unpickling would run code is refused, and a full load first checks the CRC-32 that the zip format
stores for every record, which ``torch.load`` itself does not look at.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import SpikeguideError

# The layout of a training checkpoint; raise it when a change would make older code misread one.
FORMAT = 1
# a run directory's rolling checkpoint and the one it replaced
LATEST, PREVIOUS = "latest.pt", "previous.pt"


class UnreadableCheckpoint(SpikeguideError):
    """A checkpoint file that is missing, truncated or corrupted."""


def save_checkpoint(state: dict[str, Any], path: str | Path, previous: Path | None = None) -> None:
    """Write ``state`` to ``path`` atomically; ``previous``: where the file it replaces is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = os_error(e)
        if cause is None:
            raise
        raise SpikeguideError(
            f"cannot write checkpoint {str(path)!r} ({cause.strerror or cause}); the checkpoints "
            "already in that folder are unchanged: make room, then resume with --resume auto"
        ) from None
    if previous is not None and path.exists():
        os.replace(path, previous)
        fsync_dir(path.parent)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def os_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e``: torch.save reports a failed write as a RuntimeError raised
    while handling it."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened, and renames there need no fsync
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def find_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file, or the preferred one (``best`` or ``latest``) inside a run directory."""
    path = Path(path)
    if path.is_dir():
        order = [prefer, "latest" if prefer == "best" else "best"]
        for name in order:
            if (path / f"{name}.pt").is_file():
                return path / f"{name}.pt"
        raise SpikeguideError(f"no checkpoint (best.pt or latest.pt) in run directory {str(path)!r}")
    if not path.is_file():
        raise SpikeguideError(f"checkpoint {str(path)!r} does not exist")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """A checkpoint's contents; ``mmap=True`` maps the tensors instead of reading them (cheap
    when only the plain data, e.g. the epoch, is needed)."""
    path = Path(path)
    if not mmap:
        check_records(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UnreadableCheckpoint(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain data, "
            f"and unpickling them could run code ({first_line(e)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UnreadableCheckpoint(f"cannot read checkpoint {str(path)!r}: {first_line(e)}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UnreadableCheckpoint(f"{str(path)!r} is not a spikeguide checkpoint")
    if state.get("format", FORMAT) > FORMAT:
        raise SpikeguideError(
            f"{str(path)!r} has checkpoint format {state['format']}, newer than the format "
            f"{FORMAT} this version of spikeguide reads: upgrade spikeguide to load it")
    return state


def check_records(path: Path) -> None:
    """Refuse a checkpoint whose bytes changed after it was written (its zip records' CRC-32)."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return  # not a zip archive at all: torch.load says why
    if bad is not None:
        raise UnreadableCheckpoint(f"cannot read checkpoint {str(path)!r}: its record {bad!r} is "
                                   "corrupted (CRC-32 mismatch)")


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
