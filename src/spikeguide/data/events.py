"""Event recordings become frames ``[T, 2, H, W]`` of event counts, built once and cached."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from ..errors import SpikeguideError
from .base import ArrayDataset
from .cache import ArrayCache, file_manifest
from .parallel import parallel_imap


class Events(NamedTuple):
    """One recording as int64 arrays in image orientation: ``x`` column, ``y`` row, ``p`` 0/1."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray


@dataclass(frozen=True)
class Framing:
    """How a recording becomes frames.

    ``mode="count"``: T slices of (almost) equal event count, in file order.
    ``mode="time"``: T slices of equal duration between the first and the last timestamp.
    Coordinates recorded on a ``sensor`` (H, W) map to a frame ``size`` (h, w) by
    ``row * h // H`` and ``col * w // W`` (integer pooling of coordinates; counts add up).
    """

    frames: int
    mode: str
    sensor: tuple[int, int]
    size: tuple[int, int]

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise SpikeguideError(f"frames must be at least 1, got {self.frames}")
        if self.mode not in ("count", "time"):
            raise SpikeguideError(f"framing must be 'count' or 'time', got {self.mode!r}")
        if not all(0 < s <= full for s, full in zip(self.size, self.sensor)):
            raise SpikeguideError(f"frame size {self.size} must be within the sensor's {self.sensor}")


def to_frames(events: Events, framing: Framing) -> np.ndarray:
    """Per-pixel event counts, uint8 ``[T, 2, h, w]`` clipped at 255; channel = polarity."""
    steps, (h, w), (big_h, big_w) = framing.frames, framing.size, framing.sensor
    n = len(events.t)
    if n == 0:
        return np.zeros((steps, 2, h, w), np.uint8)
    if framing.mode == "count":
        frame = np.arange(n) * steps // n
    else:
        t0 = events.t.min()
        frame = (events.t - t0) * steps // (events.t.max() - t0 + 1)
    flat = ((frame * 2 + events.p) * h + events.y * h // big_h) * w + events.x * w // big_w
    counts = np.bincount(flat, minlength=steps * 2 * h * w)
    return np.minimum(counts, 255).astype(np.uint8).reshape(steps, 2, h, w)


def _frames_of(job: tuple[Callable[[Path], Events], Path, Framing]) -> np.ndarray:
    reader, path, framing = job
    events = reader(path)
    big_h, big_w = framing.sensor
    outside = (events.x < 0) | (events.x >= big_w) | (events.y < 0) | (events.y >= big_h)
    if n_bad := int(outside.sum()):
        raise SpikeguideError(
            f"{path}: {n_bad} events fall outside the {big_w}x{big_h} sensor: the file is corrupt "
            "or from another sensor"
        )
    return to_frames(events, framing)


def build_frames(reader: Callable[[Path], Events], files: list[Path], framing: Framing,
                 workers: int | None) -> np.ndarray:
    """Frames of every file, uint8 ``[N, T, 2, h, w]``, parsed in worker processes."""
    out = np.empty((len(files), framing.frames, 2, *framing.size), np.uint8)
    jobs = [(reader, f, framing) for f in files]
    for i, frames in enumerate(parallel_imap(_frames_of, jobs, workers)):
        out[i] = frames
    return out


def event_dataset(kind: str, folder: Path, split: str, files: list[Path], labels: list[int],
                  classes: list[str], reader: Callable[[Path], Events], framing: Framing,
                  workers: int | None, cache_dir, info: dict) -> ArrayDataset:
    """The split's frames, from the cache while its files are unchanged, else built and cached."""
    info = {**info, "frames": framing.frames, "framing": framing.mode,
            "resolution": list(framing.size), "frame_dtype": "uint8 event counts clipped at 255"}
    key = {"root": str(folder.resolve()), "split": split, **info}
    cache = ArrayCache(f"{kind}-frames", key, cache_dir)
    manifest = file_manifest(files, folder)
    cached = cache.load(manifest, ("x",))
    if cached is not None:
        x = cached["x"]
    else:
        x = build_frames(reader, files, framing, workers)
        cache.save(manifest, {"x": x})
    return ArrayDataset(
        x=torch.from_numpy(x), y=torch.tensor(labels, dtype=torch.int64), classes=classes, info=info
    )
