"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images), upscaled.

Needs no files and no network, so ``spikeguide quickstart`` runs anywhere. The split is fixed:
per class, a seeded permutation puts ``test_fraction`` of the images in the test split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import SpikeguideError
from .base import ArrayDataset
from .registry import register_dataset


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SpikeguideError(
            "the 'digits' dataset ships with scikit-learn: pip install 'spikeguide[quickstart]'"
        ) from None
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float()  # [N, 8, 8], values 0..16
    return images, torch.from_numpy(bunch.target).long()


@register_dataset("digits")
def digits(root: None, split: str, *, size: int = 16, test_fraction: float = 0.2,
           seed: int = 0) -> ArrayDataset:
    """Digits as uint8 ``[N, 1, size, size]`` (bilinear upscaling from 8x8); ``root`` is unused."""
    if split not in ("train", "test"):
        raise SpikeguideError(f"digits has splits 'train' and 'test', not {split!r}")
    if not 0 < test_fraction < 1:
        raise SpikeguideError(f"digits test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _load_digits()
    gen = torch.Generator().manual_seed(seed)
    test = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        members = (labels == c).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=gen)]
        test[members[: int(round(len(members) * test_fraction))]] = True
    keep = test if split == "test" else ~test
    x = F.interpolate(images[keep, None] / 16, size=(size, size), mode="bilinear",
                      align_corners=False)
    x = (x * 255).round().clamp(0, 255).to(torch.uint8)
    train_pixels = images[~test] / 16
    mean, std = float(train_pixels.mean()), float(train_pixels.std())
    return ArrayDataset(x, labels[keep], [str(c) for c in range(10)], (mean,), (std,),
                        {"size": size, "test_fraction": test_fraction, "seed": seed})
