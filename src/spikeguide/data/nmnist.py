"""``nmnist``: the original N-MNIST ``.bin`` recordings, as event-count frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SpikeguideError
from .base import ArrayDataset
from .events import Events, Framing, event_dataset
from .layout import check_split, class_dirs, find_dir, natural_key
from .registry import register_dataset

SENSOR = (34, 34)
EXPECTED = "<root>/{Train,Test}/<digit 0-9>/*.bin (or <root>/NMNIST/...)"
SOURCE = "https://www.garrickorchard.com/datasets/n-mnist"


def read_bin(path: Path) -> Events:
    """5 bytes an event: x, y, then polarity (bit 7) and a 23-bit timestamp in microseconds."""
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as err:
        raise SpikeguideError(f"nmnist: cannot read {path} ({err})") from None
    if raw.size % 5:
        raise SpikeguideError(
            f"nmnist: {path} is {raw.size} bytes, not a multiple of 5 (one event is 5 bytes): "
            "the file is truncated or corrupt; replace it"
        )
    e = raw.reshape(-1, 5).astype(np.int64)
    t = ((e[:, 2] & 0x7F) << 16) | (e[:, 3] << 8) | e[:, 4]
    return Events(t=t, x=e[:, 0], y=e[:, 1], p=e[:, 2] >> 7)


@register_dataset("nmnist")
def nmnist(root, split: str, *, frames: int = 10, framing: str = "count",
           workers: int | None = None, cache_dir: str | None = None) -> ArrayDataset:
    """34x34 frames ``[N, T, 2, 34, 34]``; labels from the digit folder names."""
    check_split("nmnist", split)
    sub = {"train": "Train", "test": "Test"}[split]
    folder = find_dir(root, (sub, f"NMNIST/{sub}"), "nmnist", EXPECTED, SOURCE)
    classes = class_dirs(folder, "nmnist", EXPECTED)
    files, labels = [], []
    for label, class_dir in enumerate(classes):
        found = sorted(class_dir.glob("*.bin"), key=lambda f: natural_key(f.name))
        files += found
        labels += [label] * len(found)
    if not files:
        raise SpikeguideError(f"nmnist: no .bin files under {folder}; expected {EXPECTED}")
    return event_dataset(
        "nmnist", folder, split, files, labels, [d.name for d in classes], read_bin,
        Framing(frames, framing, SENSOR, SENSOR), workers, cache_dir, info={},
    )
