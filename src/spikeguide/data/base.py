"""The in-memory dataset kind, and the stratified subset rule that both dataset kinds share."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..errors import SpikeguideError


@dataclass
class ArrayDataset:
    """A whole split held as two tensors.

    ``x`` is uint8 ``[N, C, H, W]`` for images (pixels 0..255) or uint8 ``[N, T, 2, H, W]`` for
    event frames (per-pixel event counts clipped at 255: half the memory of float16, and counts
    above 255 in one frame and pixel are rare sensor artefacts). ``y`` is int64 ``[N]``.
    ``mean``/``std`` are per-channel stats in [0, 1] pixel units (None: do not normalise).
    ``info`` records every choice that changed the data, for the run's resolved config.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.dim() not in (4, 5) or self.x.shape[0] != self.y.shape[0] or self.y.dim() != 1:
            raise ValueError(
                f"ArrayDataset needs x [N,C,H,W] or [N,T,2,H,W] and y [N]; "
                f"got {tuple(self.x.shape)} and {tuple(self.y.shape)}"
            )
        if self.y.dtype != torch.int64:
            raise ValueError(f"labels must be int64, got {self.y.dtype}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_temporal(self) -> bool:
        return self.x.dim() == 5

    @property
    def in_channels(self) -> int:
        return self.x.shape[2] if self.is_temporal else self.x.shape[1]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input frame (polarity channels for events)."""
        return tuple(self.x.shape[-3:])

    def __len__(self) -> int:
        return self.y.shape[0]

    def subset(self, n: int, seed: int = 0) -> ArrayDataset:
        """A stratified subset of ``n`` samples (see :func:`stratified_indices`); samples keep
        their original order and ``info["subset"]`` records the choice."""
        keep = stratified_indices(self.y, self.num_classes, n, seed)
        return self.select(keep, subset_info(self.info, n, seed))

    def select(self, keep: torch.Tensor, info: dict) -> ArrayDataset:
        """The samples at the indices ``keep``, in that order, described by ``info``."""
        return replace(self, x=self.x[keep], y=self.y[keep], info=info)


def subset_info(info: dict, n: int, seed: int) -> dict:
    return {**info, "subset": {"n": n, "seed": seed, "rule": "stratified"}}


def hold_out(dataset, n: int, seed: int):
    """``(rest, held)``: a class-balanced, seeded part of ``n`` samples of ``dataset`` (the
    :func:`stratified_indices` rule) and the samples it leaves, both in their original order and
    disjoint. The same (dataset, n, seed) hold out the same samples in every process."""
    if not 0 < n < len(dataset):
        raise SpikeguideError(f"data.val_split must be in 1..{len(dataset) - 1} for this training "
                              f"split of {len(dataset)} samples, got {n}")
    held = stratified_indices(dataset.y, dataset.num_classes, n, seed)
    keep = torch.ones(len(dataset), dtype=torch.bool)
    keep[held] = False
    rule = {"n": n, "seed": seed, "rule": "stratified"}
    return (dataset.select(keep.nonzero().squeeze(1), {**dataset.info, "val_held_out": rule}),
            dataset.select(held, {**dataset.info, "val_split": rule}))


def stratified_indices(y: torch.Tensor, num_classes: int, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a stratified subset of ``n`` of the labels ``y``: each class keeps its
    share of the split.

    Quotas are ``n * count_c / N`` rounded down, the remainder going to the classes with the
    largest fractional parts (lowest class index on ties); the members of each class are the
    first of a seeded permutation.
    """
    total = y.shape[0]
    if not 0 < n <= total:
        raise SpikeguideError(f"subset size must be in 1..{total} for this split, got {n}")
    counts = torch.bincount(y, minlength=num_classes)
    exact = counts.double() * n / total
    quota = exact.floor().long()
    short = n - int(quota.sum())
    # stable sort so ties go to the lowest class index
    order = torch.sort(exact - quota, descending=True, stable=True).indices
    quota[order[:short]] += 1
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    labels = y[perm]
    # rank of each permuted sample within its class: keep it when below the class quota
    by_class = torch.sort(labels, stable=True).indices
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(labels)
    rank[by_class] = torch.arange(total) - starts[labels[by_class]]
    return perm[rank < quota[labels]].sort().values
