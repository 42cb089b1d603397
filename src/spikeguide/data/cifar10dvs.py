"""``cifar10dvs``: the official CIFAR10-DVS AEDAT 2.0 recordings, as event-count frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SpikeguideError
from .base import ArrayDataset
from .events import Events, Framing, event_dataset
from .layout import check_split, class_dirs, find_dir, natural_key
from .registry import register_dataset

SENSOR = (128, 128)
EXPECTED = "<root>/<class>/*.aedat (10 folders: airplane, automobile, ..., truck)"
SOURCE = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"
# The dataset ships no split. "first90": the first 90% of each class's files (natural order)
# train, the rest test. "last90": the first 10% test, the rest train; on the official 1,000
# files a class that is files 0-99 for test, the split of SpikingJelly's CIFAR10DVSTEBNSplit.
SPLIT_RULES = ("first90", "last90")


def read_aedat(path: Path) -> Events:
    """AEDAT 2.0: ``#`` header lines, then big-endian (uint32 address, uint32 timestamp in us).

    Address bits: polarity = addr & 1, x = (addr >> 1) & 0x7F, y = (addr >> 8) & 0x7F. We map
    them to image orientation as SpikingJelly does (spikingjelly/datasets/cifar10_dvs.py,
    ``_load_origin_data``), like tonic's tonic/datasets/cifar10dvs.py in its releases that read
    .aedat: column = 127 - y, row = 127 - x, polarity = 1 - bit. That shows the objects upright
    (see jackd/events-tfds PR #1), so a horizontal flip is a left-right mirror, and our pixels
    and channels line up with those libraries' frames. Decoders that only flip x (127 - x, y)
    show the objects rotated by 90 degrees.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise SpikeguideError(f"cifar10dvs: cannot read {path} ({err})") from None
    if not data.startswith(b"#!AER-DAT2.0"):
        raise SpikeguideError(
            f"cifar10dvs: {path} does not start with '#!AER-DAT2.0': not an AEDAT 2.0 recording"
        )
    pos = 0
    while data.startswith(b"#", pos):
        pos = data.find(b"\n", pos) + 1
        if pos == 0:
            raise SpikeguideError(f"cifar10dvs: {path} ends inside its header: the file is truncated")
    if (len(data) - pos) % 8:
        raise SpikeguideError(
            f"cifar10dvs: {path} has {len(data) - pos} bytes of events, not a multiple of 8 "
            "(one event is 8 bytes): the file is truncated or corrupt; replace it"
        )
    words = np.frombuffer(data, ">u4", offset=pos).reshape(-1, 2).astype(np.int64)
    addr, t = words[:, 0], words[:, 1]
    return Events(t=t, x=127 - ((addr >> 8) & 0x7F), y=127 - ((addr >> 1) & 0x7F), p=1 - (addr & 1))


def split_files(files: list[Path], split: str, rule: str) -> list[Path]:
    n_train = len(files) * 9 // 10
    n_test = len(files) - n_train
    if rule == "first90":
        return files[:n_train] if split == "train" else files[n_train:]
    return files[n_test:] if split == "train" else files[:n_test]


@register_dataset("cifar10dvs")
def cifar10dvs(root, split: str, *, split_rule: str = "first90", resolution: int = 128,
               frames: int = 10, framing: str = "count", workers: int | None = None,
               cache_dir: str | None = None) -> ArrayDataset:
    """Frames ``[N, T, 2, r, r]`` at ``resolution`` r (128 native; 48 is common in papers)."""
    check_split("cifar10dvs", split)
    if split_rule not in SPLIT_RULES:
        raise SpikeguideError(
            f"cifar10dvs: unknown split_rule {split_rule!r}; use one of {', '.join(SPLIT_RULES)}"
        )
    folder = find_dir(root, ("",), "cifar10dvs", EXPECTED, SOURCE)
    classes = class_dirs(folder, "cifar10dvs", EXPECTED)
    files, labels = [], []
    for label, class_dir in enumerate(classes):
        found = sorted(class_dir.glob("*.aedat"), key=lambda f: natural_key(f.name))
        if not found:
            raise SpikeguideError(f"cifar10dvs: class folder {class_dir} holds no .aedat files")
        chosen = split_files(found, split, split_rule)
        files += chosen
        labels += [label] * len(chosen)
    return event_dataset(
        "cifar10dvs", folder, split, files, labels, [d.name for d in classes], read_aedat,
        Framing(frames, framing, SENSOR, (resolution, resolution)), workers, cache_dir,
        info={"split_rule": split_rule},
    )
