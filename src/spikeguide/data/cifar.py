"""``cifar10`` and ``cifar100``: the official python pickle batches."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SpikeguideError
from .base import ArrayDataset
from .download import fetch_and_extract
from .layout import check_split, missing_data
from .registry import register_dataset


@dataclass(frozen=True)
class CifarFormat:
    folder: str
    splits: dict[str, tuple[str, ...]]
    meta: str
    label_key: bytes
    names_key: bytes
    url: str
    md5: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


FORMATS = {
    "cifar10": CifarFormat(
        folder="cifar-10-batches-py",
        splits={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        meta="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        mean=(0.4914, 0.4822, 0.4465),  # per-channel pixel mean and std of the training set
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarFormat(
        folder="cifar-100-python",
        splits={"train": ("train",), "test": ("test",)},
        meta="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

# the official batches hold only dicts, lists, bytes and NumPy arrays: refuse anything else
# (_codecs.encode appears when Python 3 re-pickles bytes at protocol 2)
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path, dataset: str) -> dict:
    try:
        with open(path, "rb") as f:
            return _BatchUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise SpikeguideError(
            f"{dataset}: cannot read {path} ({type(err).__name__}: {err}); it is truncated or not an "
            "official python batch: delete it and fetch it again"
        ) from None


def read_batch(path: Path, fmt: CifarFormat, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle(path, dataset)
    data, labels = batch.get(b"data"), batch.get(fmt.label_key)
    if (
        not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
        or data.shape[1] != 3072 or labels is None or len(labels) != data.shape[0]
    ):
        raise SpikeguideError(
            f"{dataset}: {path} is not an official batch (needs {b'data'!r}: uint8 [N, 3072] and "
            f"{fmt.label_key!r}: N labels): delete it and fetch it again"
        )
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def locate(root, fmt: CifarFormat, dataset: str, download: bool) -> Path:
    """The folder holding the batches: ``root/<folder>`` or ``root`` itself."""
    names = (*fmt.splits["train"], *fmt.splits["test"], fmt.meta)
    expected = f"<root>/{fmt.folder}/{{{','.join(names)}}}"
    if root is None:
        raise missing_data(dataset, None, expected, fmt.url, download=True)
    root = Path(root).expanduser()
    for attempt in range(2):
        for folder in (root / fmt.folder, root):
            if all((folder / n).is_file() for n in names):
                return folder
        if not download or attempt:
            break
        fetch_and_extract(fmt.url, root, fmt.md5)
    raise missing_data(dataset, root, expected, fmt.url, download=True)


def build_cifar(dataset: str, root, split: str, download: bool) -> ArrayDataset:
    check_split(dataset, split)
    fmt = FORMATS[dataset]
    folder = locate(root, fmt, dataset, download)
    parts = [read_batch(folder / name, fmt, dataset) for name in fmt.splits[split]]
    names = read_pickle(folder / fmt.meta, dataset).get(fmt.names_key)
    if names is None:
        raise SpikeguideError(
            f"{dataset}: {folder / fmt.meta} has no {fmt.names_key!r}: fetch it again"
        )
    y = np.concatenate([p[1] for p in parts])
    if y.min() < 0 or y.max() >= len(names):
        raise SpikeguideError(f"{dataset}: labels in {folder} fall outside 0..{len(names) - 1}")
    return ArrayDataset(
        x=torch.from_numpy(np.concatenate([p[0] for p in parts])),
        y=torch.from_numpy(y),
        classes=[n.decode() for n in names],
        mean=fmt.mean,
        std=fmt.std,
        info={"format": "python pickle batches", "files": list(fmt.splits[split])},
    )


@register_dataset("cifar10")
def cifar10(root, split: str, *, download: bool = False) -> ArrayDataset:
    return build_cifar("cifar10", root, split, download)


@register_dataset("cifar100")
def cifar100(root, split: str, *, download: bool = False) -> ArrayDataset:
    """CIFAR-100 with its 100 fine labels."""
    return build_cifar("cifar100", root, split, download)
