"""The streaming dataset kind: a split as a list of image files, decoded when read.

An :class:`ImageFiles` is what the ``imagefolder`` builder returns. The streaming loader reads it
batch by batch (``data/stream.py``); :meth:`ImageFiles.decode` turns it into the in-memory kind,
an :class:`ArrayDataset`, once (cached). Both give the same pixels for the same sample.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import SpikeguideError
from .base import ArrayDataset, stratified_indices, subset_info
from .cache import ArrayCache, file_manifest
from .decode import (
    CorruptImageError,
    RandomResizedCrop,
    image_size,
    load_image,
    resized_size,
    resolve_decoder,
)
from .parallel import parallel_imap

log = logging.getLogger("spikeguide")


@dataclass
class ImageFiles:
    """Image files of one split with their labels, and how to decode them.

    ``names`` are paths relative to ``folder``, stored as one NumPy bytes array rather than a
    list of Python strings: forked loader workers then share its pages instead of copying them
    as reference counts change, and a million names take tens of MB. Evaluation geometry:
    shorter side to ``resize``, then a ``crop`` center crop (each optional). ``workers``: decode
    processes (whole split for :meth:`decode`, batches for the streaming loader).
    """

    folder: Path
    names: np.ndarray
    y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str = "RGB"
    resize: int | None = None
    crop: int | None = None
    decoder: str = "pillow"
    skip_corrupt: bool = False
    workers: int | None = None
    cache_dir: str | None = None
    info: dict = field(default_factory=dict)

    is_temporal = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return len(self.mode)

    def __len__(self) -> int:
        return self.y.shape[0]

    def path(self, index: int) -> Path:
        return self.folder / os.fsdecode(self.names[index])

    def subset(self, n: int, seed: int = 0) -> ImageFiles:
        """The files :meth:`ArrayDataset.subset` would keep, so both kinds agree."""
        keep = stratified_indices(self.y, self.num_classes, n, seed)
        return self.select(keep, subset_info(self.info, n, seed))

    def select(self, keep: torch.Tensor, info: dict) -> ImageFiles:
        """The files at the indices ``keep``, in that order, described by ``info``."""
        return replace(self, names=self.names[keep.numpy()], y=self.y[keep], info=info)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of a sample at the evaluation geometry (from the first file's size
        when ``crop`` does not fix it)."""
        if self.crop:
            h = w = self.crop
        else:
            w, h = image_size(self.path(0))
            if self.resize:
                w, h = resized_size(w, h, self.resize)
        return self.in_channels, h, w

    def decoded_nbytes(self) -> int:
        """Bytes of the split decoded at the evaluation geometry."""
        return len(self) * int(np.prod(self.frame_shape))

    def read(self, index: int, random_crop: RandomResizedCrop | None = None,
             seed: int = 0) -> np.ndarray:
        """Sample ``index`` as uint8 ``[C, H, W]``: ``random_crop`` (seeded by ``seed``) to
        ``crop`` x ``crop``, or the evaluation geometry."""
        return load_image(self.path(index), self.mode, self.decoder, self.resize, self.crop,
                          random_crop, seed)

    def read_or_replace(self, index: int, random_crop: RandomResizedCrop | None = None,
                        seed: int = 0) -> tuple[np.ndarray, int]:
        """Sample ``index``, or with ``skip_corrupt`` the next readable one (cyclic), with the
        same geometry and seed; returns the pixels and the index they come from."""
        for step in range(len(self) if self.skip_corrupt else 1):
            source = (index + step) % len(self)
            try:
                return self.read(source, random_crop, seed), source
            except CorruptImageError:
                if not self.skip_corrupt:
                    raise
        raise SpikeguideError(f"imagefolder: none of the {len(self)} images of {self.folder} "
                              "can be decoded")

    def decode(self) -> ArrayDataset:
        """The whole split in memory, decoded in ``workers`` processes and cached while its
        files are unchanged; corrupt files as in :meth:`read_or_replace`."""
        key = {"root": str(self.folder.resolve()), "resize": self.resize, "crop": self.crop,
               "mode": self.mode, "decoder": resolve_decoder(self.decoder)}
        if "subset" in self.info:
            key["subset"] = self.info["subset"]
        files = [self.path(i) for i in range(len(self))]
        cache = ArrayCache("imagefolder", key, self.cache_dir)
        manifest = file_manifest(files, self.folder)
        cached = cache.load(manifest, ("x", "source"))
        if cached is not None:
            x, source = cached["x"], cached["source"]
        else:
            x, source = self.decode_uncached()
            cache.save(manifest, {"x": x, "source": source})
        replaced = np.flatnonzero(source != np.arange(len(self)))
        if len(replaced) and not self.skip_corrupt:  # cached by a run that skipped them
            self.read(int(replaced[0]))  # raises the error that names the file
        for i in replaced:
            log.warning("skip_corrupt: %s is corrupt; replaced by %s", files[i], files[source[i]])
        return ArrayDataset(
            x=torch.from_numpy(x), y=self.y[torch.from_numpy(source)], classes=self.classes,
            mean=self.mean, std=self.std, info={**self.info, "resample": "bilinear, then center crop"},
        )

    def decode_uncached(self) -> tuple[np.ndarray, np.ndarray]:
        """Every sample as uint8 ``[N, C, H, W]``, and the index each one's pixels come from
        (itself, or the replacement of a corrupt file)."""
        files = [self.path(i) for i in range(len(self))]
        jobs = [(f, self.mode, self.decoder, self.resize, self.crop) for f in files]
        out, first, failed = None, 0, []
        for i, image in enumerate(parallel_imap(_decode_or_none, jobs, self.workers)):
            if image is None:
                if not self.skip_corrupt:
                    self.read(i)  # raises the error that names the file
                failed.append(i)
                continue
            if out is None:
                out, first = np.empty((len(files), *image.shape), np.uint8), i
            if image.shape != out.shape[1:]:
                raise SpikeguideError(
                    f"imagefolder: {files[i]} is {image.shape[2]}x{image.shape[1]} but "
                    f"{files[first]} is {out.shape[3]}x{out.shape[2]}; images must share one "
                    "size: set the resize and crop options (e.g. resize=256, crop=224)"
                )
            out[i] = image
        if out is None:
            raise SpikeguideError(f"imagefolder: none of the {len(files)} images of {self.folder} "
                                  "can be decoded")
        source = np.arange(len(files))
        bad = set(failed)
        for i in failed:  # the next readable sample, cyclic: the streaming loader's rule
            source[i] = next(j % len(files) for j in range(i + 1, i + len(files))
                             if j % len(files) not in bad)
            out[i] = out[source[i]]
        return out, source


def _decode_or_none(args: tuple) -> np.ndarray | None:
    try:
        return load_image(*args)
    except CorruptImageError:
        return None
