"""The batches of an epoch, in an order fixed by (seed, epoch), and each rank's slice of them."""

from __future__ import annotations

import hashlib
from typing import Iterator

import torch

from ..errors import SpikeguideError


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, e.g. (seed, epoch) or (seed, epoch, step); no collisions
    between nearby tuples, unlike sums or products."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class BatchOrder:
    """The sample indices of each batch of an epoch, and this rank's slice of them.

    ``batch_size`` is the global batch. With ``world_size > 1`` rank r gets the r-th
    contiguous slice of every global batch (``tensor_split``), so the ranks together see
    exactly the batches that one process would. The order is a pure function of (seed, epoch):
    call ``set_epoch`` before each epoch; ``iter_from(step)`` resumes an epoch at batch ``step``.
    """

    def __init__(self, size: int, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, device: str | torch.device = "cpu", rank: int = 0,
                 world_size: int = 1):
        if batch_size < 1 or batch_size % world_size:
            raise SpikeguideError(
                f"batch size {batch_size} must be a positive multiple of the {world_size} processes"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if drop_last and size < batch_size:
            raise SpikeguideError(
                f"batch size {batch_size} exceeds the {size} samples of the split, so "
                "dropping the last partial batch leaves none: lower the batch size"
            )
        self.size, self.batch_size = size, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self) -> torch.Tensor:
        """This epoch's sample order (CPU int64)."""
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        return torch.randperm(self.size, generator=generator)

    def batch_indices(self, step: int, device: torch.device | None = None
                      ) -> Iterator[torch.Tensor]:
        """This rank's sample indices of each batch from ``step`` to the end of the epoch, on
        ``device`` (default the CPU; the order moves there once per epoch)."""
        order = self.order() if device is None else self.order().to(device)
        for start in range(step * self.batch_size, len(self) * self.batch_size, self.batch_size):
            batch = order[start:start + self.batch_size]
            yield batch.tensor_split(self.world_size)[self.rank] if self.world_size > 1 else batch

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)
