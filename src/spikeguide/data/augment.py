"""Batched augmentation on the batch's device: tensor ops only, no loop over samples.

Randomness comes only from the generator passed in. Numbers are drawn on the generator's own
device and then moved to the batch's device, so a CPU generator (what the Trainer passes)
gives the same augmentation on CPU and on GPU; the draws reach a GPU from pinned memory without
blocking, so augmenting never makes the host wait for the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import SpikeguideError
from .decode import RandomResizedCrop
from .policies import apply_policy
from .transfer import to_device

POLICIES = ("autoaugment", "trivialaugment")


def crop_batch(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Zero-pad ``x`` ``[B, C, H, W]`` by ``padding`` and cut each sample's H x W window at
    (``top[b]``, ``left[b]``) of the padded image, offsets in 0..2*padding; two gathers."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = (top.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (left.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    out = padded.gather(2, rows.expand(b, c, h, w + 2 * padding))
    return out.gather(3, cols.expand(b, c, h, w))


def roll_batch(x: torch.Tensor, down: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Shift each sample of ``x`` ``[B, C, H, W]`` cyclically by (``down[b]``, ``right[b]``)."""
    b, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device) - down.view(b, 1)) % h
    cols = (torch.arange(w, device=x.device) - right.view(b, 1)) % w
    out = x.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w))
    return out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def flip_batch(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the samples of ``x`` ``[B, C, H, W]`` where ``mask`` is True."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def cutout_batch(x: torch.Tensor, size: int, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square centred at (``row[b]``, ``col[b]``), clipped at the
    borders (DeVries & Taylor: the centre may be anywhere in the image)."""
    h, w = x.shape[-2:]
    start_r, start_c = (row - size // 2).view(-1, 1), (col - size // 2).view(-1, 1)
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_r = (r >= start_r) & (r < start_r + size)
    in_c = (c >= start_c) & (c < start_c + size)
    return x.masked_fill((in_r.unsqueeze(2) & in_c.unsqueeze(1)).unsqueeze(1), 0.0)


@dataclass
class Augment:
    """Training augmentation for static images ``[B, C, H, W]`` (uint8) and event frames
    ``[B, T, 2, H, W]`` (counts); the same crop, roll, flip and cutout for all T of a sample.

    Order: crop (zero padding) -> roll -> flip -> policy -> to float -> normalise -> cutout.
    Images become float in [0, 1] and then ``(x - mean) / std``; event counts stay counts
    unless ``mean``/``std`` are given. Cutout zeroes after normalisation, i.e. paints the mean.
    ``policy`` ("autoaugment": the CIFAR-10 policy; "trivialaugment": TrivialAugmentWide) is
    for static images only.

    ``random_resized_crop`` (scale ``crop_scale``, aspect ratio ``crop_ratio``) needs the source
    image, so the streaming loader's workers apply it, together with the flip, per sample
    (:meth:`sample_crop`); this object then skips the flip.
    """

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    policy: str | None = None
    roll: int = 0
    random_resized_crop: bool = False
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # (mean, std) tensors per device, built once
    _stats: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.crop_scale, self.crop_ratio = tuple(self.crop_scale), tuple(self.crop_ratio)
        self.sample_crop()  # checks the scale and ratio
        if min(self.crop_padding, self.cutout, self.roll) < 0:
            raise SpikeguideError("augment: crop_padding, cutout and roll must be >= 0")
        if self.policy is not None and self.policy not in POLICIES:
            raise SpikeguideError(
                f"augment: unknown policy {self.policy!r}; use one of {', '.join(POLICIES)} or none"
            )
        if (self.mean is None) != (self.std is None):
            raise SpikeguideError("augment: give both mean and std, or neither")

    def sample_crop(self) -> RandomResizedCrop | None:
        """The per-sample part the loader applies, or None."""
        if not self.random_resized_crop:
            return None
        return RandomResizedCrop(self.crop_scale, self.crop_ratio, flip=self.flip)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 input for the model, without randomness (what evaluation uses)."""
        return self._standardize(self._to_float(x))

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """``x`` augmented; ``shard`` = (rank, processes): ``x`` is that rank's slice of a
        global batch split into equal parts, and gets the rows of the global batch's draws, so
        the ranks together augment exactly as one process would."""
        temporal = x.dim() == 5
        if temporal and self.policy:
            raise SpikeguideError("augment: policies apply to static images, not event frames")
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        out = x.reshape(b, -1, h, w)  # T and polarity fold into channels: one draw per sample
        rank, parts = shard
        rows = slice(rank * b, (rank + 1) * b)

        def draw_int(low: int, high: int) -> torch.Tensor:
            drawn = torch.randint(low, high, (b * parts,), generator=generator,
                                  device=generator.device)
            return to_device(drawn[rows], x.device)

        if self.crop_padding:
            span = 2 * self.crop_padding + 1
            out = crop_batch(out, self.crop_padding, draw_int(0, span), draw_int(0, span))
        if self.roll:
            out = roll_batch(out, draw_int(-self.roll, self.roll + 1),
                             draw_int(-self.roll, self.roll + 1))
        if self.flip and not self.random_resized_crop:
            out = flip_batch(out, draw_int(0, 2).bool())
        out = self._to_float(out.reshape(x.shape))
        if self.policy:
            out = apply_policy(out, self.policy, generator, b * parts, rows)
        out = self._standardize(out)
        if self.cutout:
            folded = cutout_batch(out.reshape(b, -1, h, w), self.cutout, draw_int(0, h),
                                  draw_int(0, w))
            out = folded.reshape(x.shape)
        return out

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() if x.dim() == 5 else torch.div(x, 255.0)  # uint8 / float -> float32

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        if x.device not in self._stats:
            self._stats[x.device] = (torch.tensor(self.mean, device=x.device).view(-1, 1, 1),
                                     torch.tensor(self.std, device=x.device).view(-1, 1, 1))
        mean, std = self._stats[x.device]
        return (x - mean) / std
