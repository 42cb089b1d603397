"""The CIFAR-10 JPEG copy for the pipeline and training sections.

The packed copy (``cifar10-jpeg-q75.tar.gz``, ImageFolder layout under ``CIFAR-10-images-jpg/``)
travels to the device machine with the command; it is unpacked in the background while the
first sections run. The smoke run packs a tiny tree of the same layout and goes the same way.
"""

from __future__ import annotations

import subprocess
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from spikeguide.errors import SpikeguideError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def write_tiny_tarball(path: Path, train_per_class: int = 8, test_per_class: int = 4) -> Path:
    """A packed ``CIFAR-10-images-jpg/{train,test}/<class>/NNNN.jpg`` tree of random 32x32
    images, the layout of the real copy."""
    rng = np.random.default_rng(0)
    staging = path.parent / "tiny-tree"
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CIFAR10_CLASSES):
            folder = staging / "CIFAR-10-images-jpg" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):  # a class-dependent tint, so that a model can learn something
                pixels = rng.integers(0, 128, (32, 32, 3)) + label * 12
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=75)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(staging / "CIFAR-10-images-jpg", arcname="CIFAR-10-images-jpg")
    return path


def find_root(folder: Path) -> Path:
    """``folder`` when it holds ``train/``, else its one subfolder that does."""
    found = [folder] if (folder / "train").is_dir() else [p.parent for p in folder.glob("*/train")]
    if len(found) != 1:
        raise SpikeguideError(f"{folder} holds no single ImageFolder tree "
                              "(<folder>/train/<class>/)")
    return found[0]


class CifarJpeg:
    """``source``: the packed copy (unpacked under ``work``) or an unpacked ImageFolder root."""

    def __init__(self, source: Path, work: Path):
        self.source = source
        self.unpack_seconds: float | None = None
        self._root: Path | None = None
        self._unpack: subprocess.Popen | None = None
        if source.is_dir():
            self._root = find_root(source)
        elif source.is_file():
            self._target = work / "data"
            self._target.mkdir(parents=True, exist_ok=True)
            self._unpack = subprocess.Popen(["tar", "-xzf", str(source), "-C", str(self._target)],
                                            stderr=subprocess.PIPE, text=True)
            self._waiter = threading.Thread(target=self._wait, args=(time.monotonic(),),
                                            daemon=True)
            self._waiter.start()
        else:
            raise SpikeguideError(f"--data {str(source)!r} does not exist: pass the packed "
                                  "CIFAR-10 JPEG copy (benchmarks/prepare_gpu_carry.sh puts it "
                                  "in gpu_carry/) or its unpacked folder")

    def _wait(self, started: float) -> None:
        self._unpack_error = self._unpack.communicate()[1]
        self.unpack_seconds = time.monotonic() - started

    def root(self) -> Path:
        """The ImageFolder root (holding ``train/`` and ``test/``), once unpacked."""
        if self._root is None:
            self._waiter.join()
            if self._unpack.returncode:
                raise SpikeguideError(f"unpacking {self.source} failed: "
                                      f"{self._unpack_error.strip()[-500:]}")
            self._root = find_root(self._target)
        return self._root

    def close(self) -> None:
        if self._unpack is not None and self._unpack.poll() is None:
            self._unpack.kill()
            self._unpack.wait()
