"""Batches in an order fixed by (seed, epoch), for both dataset kinds.

:class:`~spikeguide.data.order.BatchOrder` holds what both loaders share: the order, the batches
of an epoch, resuming at a step, and each rank's slice of every global batch. :class:`InMemoryLoader` indexes tensors
held on the training device; :class:`~spikeguide.data.stream.StreamLoader` decodes image files
in worker processes. :func:`make_loader` picks the one that fits the dataset.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..errors import SpikeguideError
from .augment import Augment
from .base import ArrayDataset
from .choice import RANDOM_CROP_NEEDS_STREAM
from .decode import RandomResizedCrop
from .order import BatchOrder, mix_seed
from .registry import Dataset
from .stream import StreamLoader

__all__ = ["BatchOrder", "InMemoryLoader", "StreamLoader", "make_loader", "mix_seed",
           "normalized_batches"]


class InMemoryLoader(BatchOrder):
    """Yields ``(x, y)`` batches (x still uint8) indexed straight out of tensors moved to
    ``device`` once."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, device: str | torch.device = "cpu", rank: int = 0,
                 world_size: int = 1):
        super().__init__(len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last,
                         seed=seed, device=device, rank=rank, world_size=world_size)
        self.dataset = dataset
        self.x = dataset.x.to(self.device)
        self.y = dataset.y.to(self.device)

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.batch_indices(step, self.device):
            yield self.x[batch], self.y[batch]


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                seed: int = 0, device: str | torch.device = "cpu", rank: int = 0,
                world_size: int = 1, random_crop: RandomResizedCrop | None = None) -> BatchOrder:
    """The loader of ``dataset``'s kind: in memory, or streamed from its files.

    ``random_crop``: the per-sample random-resized-crop (and flip) of training, which only the
    streaming loader can apply (the in-memory kind holds images already cropped).
    """
    options = dict(shuffle=shuffle, drop_last=drop_last, seed=seed, device=device, rank=rank,
                   world_size=world_size)
    if isinstance(dataset, ArrayDataset):
        if random_crop is not None:
            raise SpikeguideError(RANDOM_CROP_NEEDS_STREAM)
        return InMemoryLoader(dataset, batch_size, **options)
    return StreamLoader(dataset, batch_size, random_crop=random_crop, **options)


def normalized_batches(dataset: Dataset, batch_size: int, device: torch.device
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A split's batches in order on ``device``, normalized as for evaluation."""
    loader = make_loader(dataset, batch_size, shuffle=False, drop_last=False, device=device)
    normalize = Augment(mean=dataset.mean, std=dataset.std).normalize
    return ((normalize(x), y) for x, y in loader)
