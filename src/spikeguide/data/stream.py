"""The streaming loader: image files decoded batch by batch in worker processes.

PyTorch's ``DataLoader`` runs the workers (pinned memory, a crashed worker raising in the main
process). Each task is one batch: ``(epoch, sample indices)``. A worker decodes its samples,
crops them (random-resized-crop + flip for training, seeded by (seed, epoch, index); resize +
center crop otherwise) and returns one uint8 tensor, so a batch is the same whatever worker
decoded it, however many workers there are, and wherever the epoch was resumed.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import SpikeguideError
from ..machine import local_processes, usable_cpus
from .decode import RandomResizedCrop
from .imagefiles import ImageFiles
from .order import BatchOrder, mix_seed

log = logging.getLogger("spikeguide")

MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """This process's share of the usable cores (torchrun may start several on the machine),
    at most ``MAX_DEFAULT_WORKERS``."""
    return max(1, min(MAX_DEFAULT_WORKERS, usable_cpus() // local_processes()))


def isolate_worker(worker_id: int) -> None:
    """A worker leaves the terminal's process group: Ctrl-C, or a SIGTERM sent to the whole
    group, reaches only the main process, which finishes its step, checkpoints and then shuts
    the workers down. A worker whose main process died exits on its own (DataLoader's
    watchdog)."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()


class BatchReader(torch.utils.data.Dataset):
    """``reader[(epoch, indices)]`` -> ``(x uint8 [B, C, H, W], y int64 [B], error, replaced)``.

    ``error`` is the one-line message of a file that stops the run (the main process raises
    it: an exception raised in a worker would reach the user with the worker's traceback);
    ``replaced`` lists ``(corrupt file, file used instead)`` under ``skip_corrupt``.
    """

    def __init__(self, files: ImageFiles, random_crop: RandomResizedCrop | None, seed: int):
        self.files, self.random_crop, self.seed = files, random_crop, seed

    def __getitem__(self, key: tuple[int, list[int]]):
        epoch, indices = key
        try:
            images, sources = [], []
            for i in indices:
                image, source = self.files.read_or_replace(i, self.random_crop,
                                                           mix_seed(self.seed, epoch, i))
                images.append(image)
                sources.append(source)
            x = self._stack(images, indices)
        except SpikeguideError as err:
            return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), str(err), []
        replaced = [(str(self.files.path(i)), str(self.files.path(s)))
                    for i, s in zip(indices, sources) if i != s]
        return x, self.files.y[sources], None, replaced

    def _stack(self, images: list[np.ndarray], indices: list[int]) -> torch.Tensor:
        if not images:  # a rank's empty slice of a short last batch
            return torch.empty(0, *self.files.frame_shape, dtype=torch.uint8)
        out = np.empty((len(images), *images[0].shape), np.uint8)
        for k, image in enumerate(images):
            if image.shape != out.shape[1:]:
                raise SpikeguideError(
                    f"imagefolder: {self.files.path(indices[k])} is {image.shape[2]}x"
                    f"{image.shape[1]} but {self.files.path(indices[0])} is {out.shape[3]}x"
                    f"{out.shape[2]}; images must share one size: set the resize and crop "
                    "options (e.g. resize=256, crop=224)"
                )
            out[k] = image
        return torch.from_numpy(out)


def worker_batches(loader: DataLoader) -> Iterator:
    """The loader's batches; a worker that died (killed by the system, out of memory, a crash in
    a decoder library) stops the run with one line instead of PyTorch's traceback."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as err:
            if "DataLoader worker" not in str(err):
                raise
            raise SpikeguideError(
                f"a data loader worker stopped ({str(err).splitlines()[0].rstrip('. ')}); the run "
                "stopped with it: resume from its last checkpoint with --resume (if the system "
                "killed it for memory, set fewer workers with data.options.workers)") from None
        yield batch


class StreamLoader(BatchOrder):
    """Yields ``(x, y)`` batches (x uint8) of an :class:`ImageFiles`, decoded in
    ``files.workers`` processes (default :func:`default_workers`; 0 decodes in this process)
    and copied to ``device`` from pinned memory without blocking.

    ``random_crop``: training's random-resized-crop to ``files.crop`` (and flip), per sample.
    """

    def __init__(self, files: ImageFiles, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, device: str | torch.device = "cpu", rank: int = 0,
                 world_size: int = 1, random_crop: RandomResizedCrop | None = None):
        super().__init__(len(files), batch_size, shuffle=shuffle, drop_last=drop_last,
                         seed=seed, device=device, rank=rank, world_size=world_size)
        if random_crop is not None and not files.crop:
            raise SpikeguideError("augment.random_resized_crop needs the output size: set "
                                  "data.options.crop (e.g. 224)")
        self.dataset = files
        self.workers = default_workers() if files.workers is None else files.workers
        self.reader = BatchReader(files, random_crop, seed)
        self.reported: set[str] = set()

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if step >= len(self):  # resumed at the end of an epoch: no workers to start
            return
        keys = ((self.epoch, batch.tolist()) for batch in self.batch_indices(step))
        loader = DataLoader(self.reader, batch_size=None, sampler=keys, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", worker_init_fn=isolate_worker)
        for x, y, error, replaced in worker_batches(loader):
            if error is not None:
                raise SpikeguideError(error)
            for corrupt, used in replaced:
                if corrupt not in self.reported:
                    self.reported.add(corrupt)
                    log.warning("skip_corrupt: %s is corrupt; replaced by %s", corrupt, used)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
