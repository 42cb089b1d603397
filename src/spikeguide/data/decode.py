"""One image file to uint8 pixels: the decoder, then the per-sample geometry.

Decoding: Pillow, or simplejpeg (libjpeg-turbo) for JPEGs in YCbCr or grayscale when it is
installed and the decoder is "auto" or "simplejpeg". Both use libjpeg-turbo's accurate integer
DCT and smooth chroma upsampling, and give the same pixels on the files the tests generate; any
other file (PNG, CMYK JPEG, a file simplejpeg refuses) goes to Pillow, whose error names a
corrupt file.

Geometry: :func:`resize_center_crop` (evaluation and the in-memory path: torchvision's
``Resize(int)`` + ``CenterCrop`` arithmetic) or :class:`RandomResizedCrop` (streamed training:
torchvision's ``RandomResizedCrop`` sampling rule, then an optional horizontal flip), whose
randomness is a pure function of the seed passed in.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import SpikeguideError

try:
    import simplejpeg
except ImportError:  # optional: Pillow decodes everything without it
    simplejpeg = None

DECODERS = ("auto", "pillow", "simplejpeg")
JPEG_MAGIC = b"\xff\xd8"
# colour spaces simplejpeg decodes exactly as Pillow does; CMYK/YCCK go to Pillow, whose
# conversion to RGB handles Adobe's inverted CMYK
SIMPLEJPEG_SPACES = {"YCbCr": "RGB", "Gray": "GRAY"}


class CorruptImageError(SpikeguideError):
    """A file that no decoder can read; ``skip_corrupt`` may replace it."""


def resolve_decoder(decoder: str) -> str:
    """"pillow" or "simplejpeg": what ``decoder`` means on this machine."""
    if decoder not in DECODERS:
        raise SpikeguideError(f"imagefolder: decoder must be one of {', '.join(DECODERS)}, "
                              f"got {decoder!r}")
    if decoder == "simplejpeg" and simplejpeg is None:
        raise SpikeguideError("imagefolder: decoder 'simplejpeg' is not installed: "
                              "pip install simplejpeg, or set the decoder option to 'auto'")
    if decoder == "auto":
        return "simplejpeg" if simplejpeg is not None else "pillow"
    return decoder


def _simplejpeg_image(data: bytes) -> Image.Image | None:
    """The JPEG decoded by simplejpeg, or None where Pillow should decode it."""
    try:
        space = SIMPLEJPEG_SPACES.get(simplejpeg.decode_jpeg_header(data)[2])
        if space is None:
            return None
        pixels = simplejpeg.decode_jpeg(data, colorspace=space)
        return Image.fromarray(pixels[:, :, 0] if space == "GRAY" else pixels)
    except ValueError:
        return None  # Pillow decodes it, or names what is wrong with it


def open_image(path: Path, mode: str, decoder: str) -> Image.Image:
    """The file's pixels converted to ``mode`` ("RGB" or "L"); ``decoder`` as resolved by
    :func:`resolve_decoder`. An unreadable file raises :class:`CorruptImageError`."""
    try:
        data = path.read_bytes()
        image = None
        if decoder == "simplejpeg" and data[:2] == JPEG_MAGIC:
            image = _simplejpeg_image(data)
        if image is None:
            with Image.open(io.BytesIO(data)) as opened:
                image = opened.convert(mode)  # also forces the full decode
        return image if image.mode == mode else image.convert(mode)
    except (OSError, SyntaxError, ValueError) as err:  # what Pillow raises on corrupt files
        raise CorruptImageError(
            f"imagefolder: cannot decode {path} ({err}); the file is corrupt or not an image: "
            "replace or delete it, or set data.options.skip_corrupt = true to replace it by "
            "the next readable image"
        ) from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"imagefolder: cannot read {path} ({err})") from None


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """The size after resizing the shorter side to ``resize`` (torchvision's Resize(int))."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resize * long / short)
    return (resize, new_long) if width <= height else (new_long, resize)


def resize_center_crop(image: Image.Image, resize: int | None, crop: int | None,
                       path: Path) -> Image.Image:
    """Shorter side resized to ``resize`` (bilinear), then a ``crop`` x ``crop`` center crop."""
    if resize:
        image = image.resize(resized_size(*image.size, resize), Image.BILINEAR)
    if crop:
        w, h = image.size
        if w < crop or h < crop:
            raise SpikeguideError(
                f"imagefolder: {path} is {w}x{h}, smaller than crop={crop}; "
                f"set the resize option to at least {crop}"
            )
        left, top = round((w - crop) / 2), round((h - crop) / 2)
        image = image.crop((left, top, left + crop, top + crop))
    return image


@dataclass(frozen=True)
class RandomResizedCrop:
    """A window of ``scale`` times the image's area (uniform) and aspect ratio ``ratio``
    (log-uniform), resized to the output size, then a horizontal flip with probability 1/2
    when ``flip``. Ten tries, then a center crop clamped to ``ratio`` (torchvision's rule)."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False

    ATTEMPTS = 10

    def __post_init__(self) -> None:
        (s0, s1), (r0, r1) = self.scale, self.ratio
        if not (0 < s0 <= s1 <= 1 and 0 < r0 <= r1):
            raise SpikeguideError(
                f"augment: random_resized_crop needs 0 < crop_scale[0] <= crop_scale[1] <= 1 and "
                f"0 < crop_ratio[0] <= crop_ratio[1]; got {list(self.scale)}, {list(self.ratio)}"
            )

    def window(self, width: int, height: int, draws: list[float]) -> tuple[int, int, int, int]:
        """(left, top, width, height) of the window, from ``4 * ATTEMPTS`` uniforms in [0, 1)."""
        area = width * height
        log_r0, log_r1 = math.log(self.ratio[0]), math.log(self.ratio[1])
        for k in range(self.ATTEMPTS):
            u_area, u_ratio, u_top, u_left = draws[4 * k:4 * k + 4]
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u_area)
            aspect = math.exp(log_r0 + (log_r1 - log_r0) * u_ratio)
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(u_left * (width - w + 1)), int(u_top * (height - h + 1)), w, h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, image: Image.Image, size: int, seed: int) -> Image.Image:
        draws = torch.rand(4 * self.ATTEMPTS + 1, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(seed)).tolist()
        left, top, w, h = self.window(*image.size, draws[:-1])
        out = image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
        if self.flip and draws[-1] < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out


def load_image(path: Path, mode: str, decoder: str, resize: int | None, crop: int | None,
               random_crop: RandomResizedCrop | None = None, seed: int = 0) -> np.ndarray:
    """One sample as uint8 ``[C, H, W]``: decoded, then ``random_crop`` to ``crop`` x ``crop``
    (seeded by ``seed``) or resize + center crop."""
    image = open_image(path, mode, decoder)
    if random_crop is not None:
        image = random_crop(image, crop, seed)
    else:
        image = resize_center_crop(image, resize, crop, path)
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
