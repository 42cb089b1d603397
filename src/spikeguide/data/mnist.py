"""``mnist``: idx files, plain or gzipped (also Fashion-MNIST, KMNIST, EMNIST via options)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import SpikeguideError
from .base import ArrayDataset
from .download import fetch
from .layout import check_split, missing_data
from .registry import register_dataset

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# torchvision's mirror of the official files: yann.lecun.com often refuses scripted downloads
URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes with ``ndim`` dimensions; magic and size are checked."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # a truncated .gz fails here
        raise SpikeguideError(
            f"mnist: cannot read {path} ({err}); delete it and fetch it again"
        ) from None
    header = 4 + 4 * ndim
    magic = bytes((0, 0, 0x08, ndim))
    if data[:4] != magic:
        raise SpikeguideError(
            f"mnist: {path} has magic number 0x{data[:4].hex()}, expected 0x{magic.hex()} "
            f"(unsigned bytes, {ndim} dims): not this idx file, or corrupt"
        )
    dims = np.frombuffer(data, ">u4", ndim, 4).astype(np.int64) if len(data) >= header else None
    if dims is None or len(data) != header + int(np.prod(dims)):
        raise SpikeguideError(
            f"mnist: {path} holds {len(data)} bytes, but its header promises "
            f"{'more' if dims is None else header + int(np.prod(dims))}: the file is truncated or "
            "corrupt; delete it and fetch it again"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(tuple(dims))


def find_file(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


@register_dataset("mnist")
def mnist(root, split: str, *, prefix: str = "", classes: list[str] | None = None,
          mean=MNIST_MEAN, std=MNIST_STD, download: bool = False) -> ArrayDataset:
    """Files ``<root>/<prefix>{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Fashion-MNIST and KMNIST use the same names in their own folder (set ``classes``, ``mean``,
    ``std``); EMNIST adds a prefix such as ``emnist-balanced-``. ``download`` fetches MNIST.
    """
    check_split("mnist", split)
    names = [prefix + n for n in FILES[split]]
    expected = f"<root>/{{{','.join(names)}}}[.gz]"
    if download and prefix:
        raise SpikeguideError(
            "mnist: download fetches MNIST only; drop the prefix option or download=true"
        )
    if root is None:
        raise missing_data("mnist", None, expected, URL, download=not prefix)
    root = Path(root).expanduser()
    paths = [find_file(root, n) for n in names]
    if None in paths and download:
        for name in names:
            if find_file(root, name) is None:
                fetch(URL + name + ".gz", root / f"{name}.gz", MD5[name + ".gz"])
        paths = [find_file(root, n) for n in names]
    if None in paths:
        raise missing_data("mnist", root, expected, URL, download=not prefix)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise SpikeguideError(
            f"mnist: {paths[0]} holds {images.shape[0]} images but {paths[1]} holds "
            f"{labels.shape[0]} labels: one of them is from another dataset or corrupt"
        )
    classes = list(classes) if classes is not None else [str(i) for i in range(10)]
    if labels.size and labels.max() >= len(classes):
        raise SpikeguideError(
            f"mnist: {paths[1]} has label {labels.max()} but only {len(classes)} classes; "
            "set the classes option"
        )
    return ArrayDataset(
        x=torch.from_numpy(images.copy()).unsqueeze(1),
        y=torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        mean=tuple(map(float, mean)),
        std=tuple(map(float, std)),
        info={"files": [p.name for p in paths]},
    )
