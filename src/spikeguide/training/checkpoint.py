"""Checkpoint files: written atomically, read without running code.

A crash while saving leaves the previous checkpoint intact (the new one is written to a temporary
file in the same folder, flushed, then renamed over the old one). Loading uses
``torch.load(weights_only=True)``, so a file whose unpickling would run code is refused.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import SpikeguideError

# The layout of a training checkpoint; raise it when a change would make older code misread one.
FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise SpikeguideError(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain data, "
            f"and unpickling them could run code ({str(e).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise SpikeguideError(f"cannot read checkpoint {str(path)!r}: {e}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise SpikeguideError(f"{str(path)!r} is not a spikeguide checkpoint")
    if state.get("format", FORMAT) > FORMAT:
        raise SpikeguideError(
            f"{str(path)!r} has checkpoint format {state['format']}, newer than the format "
            f"{FORMAT} this version of spikeguide reads: upgrade spikeguide to load it")
    return state
