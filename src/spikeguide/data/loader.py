"""Batches from a dataset held on the training device, in an order fixed by (seed, epoch)."""

from __future__ import annotations

import hashlib
from typing import Iterator

import torch

from ..errors import SpikeguideError
from .augment import Augment
from .base import ArrayDataset


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, e.g. (seed, epoch) or (seed, epoch, step); no collisions
    between nearby tuples, unlike sums or products."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class InMemoryLoader:
    """Yields ``(x, y)`` batches indexed straight out of tensors moved to ``device`` once.

    ``batch_size`` is the global batch. With ``world_size > 1`` rank r yields the r-th
    contiguous slice of every global batch, so the ranks together see exactly the batches
    that one process would (a short last batch is split with ``tensor_split``). The order is a
    pure function of (seed, epoch): call ``set_epoch`` before each epoch; ``iter_from(step)``
    resumes an epoch at batch ``step``.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, device: str | torch.device = "cpu", rank: int = 0,
                 world_size: int = 1):
        if batch_size < 1 or batch_size % world_size:
            raise SpikeguideError(
                f"batch size {batch_size} must be a positive multiple of the {world_size} processes"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if drop_last and len(dataset) < batch_size:
            raise SpikeguideError(
                f"batch size {batch_size} exceeds the {len(dataset)} samples of the split, so "
                "dropping the last partial batch leaves none: lower the batch size"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.x = dataset.x.to(self.device)
        self.y = dataset.y.to(self.device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self) -> torch.Tensor:
        """This epoch's sample order (CPU int64)."""
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        return torch.randperm(n, generator=generator)

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order().to(self.device)
        for start in range(step * self.batch_size, len(self) * self.batch_size, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.world_size > 1:
                batch = batch.tensor_split(self.world_size)[self.rank]
            yield self.x[batch], self.y[batch]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)


def normalized_batches(dataset: ArrayDataset, batch_size: int, device: torch.device
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A split's batches in order on ``device``, normalized as for evaluation."""
    loader = InMemoryLoader(dataset, batch_size, shuffle=False, drop_last=False, device=device)
    normalize = Augment(mean=dataset.mean, std=dataset.std).normalize
    return ((normalize(x), y) for x, y in loader)
