"""``imagefolder``: ``root/{train,val|test}/<class>/*.jpg|png``, decoded once and cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import SpikeguideError
from .base import ArrayDataset
from .cache import ArrayCache, file_manifest
from .layout import check_split, class_dirs, find_dir, natural_key
from .parallel import parallel_imap
from .registry import register_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTENSIONS = {".jpg", ".jpeg", ".png"}
EXPECTED = "<root>/{train,val or test}/<class>/*.jpg|*.jpeg|*.png"
SOURCE = (
    "the dataset's own site (ImageNet: https://image-net.org, "
    "Imagenette: https://github.com/fastai/imagenette)"
)
# a missing split folder falls back to its twin: many copies ship val/ but no test/, or the reverse
FOLDERS = {"train": ("train",), "val": ("val", "test"), "test": ("test", "val")}


def decode_image(path: Path, resize: int | None, crop: int | None, mode: str) -> np.ndarray:
    """One image as uint8 ``[H, W, C]``: shorter side resized to ``resize`` (bilinear), then
    a ``crop`` x ``crop`` center crop (torchvision's Resize(int) + CenterCrop arithmetic)."""
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if resize:
                w, h = image.size
                short, long = (w, h) if w <= h else (h, w)
                new_long = int(resize * long / short)
                size = (resize, new_long) if w <= h else (new_long, resize)
                image = image.resize(size, Image.BILINEAR)
            if crop:
                w, h = image.size
                if w < crop or h < crop:
                    raise SpikeguideError(
                        f"imagefolder: {path} is {w}x{h}, smaller than crop={crop}; "
                        f"set the resize option to at least {crop}"
                    )
                left, top = int(round((w - crop) / 2)), int(round((h - crop) / 2))
                image = image.crop((left, top, left + crop, top + crop))
            array = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as err:  # what Pillow raises on corrupt files
        raise SpikeguideError(
            f"imagefolder: cannot decode {path} ({err}); the file is corrupt or not an image: "
            "replace or delete it"
        ) from None
    return array[:, :, None] if array.ndim == 2 else array


def _decode_one(args: tuple) -> np.ndarray:
    return decode_image(*args)


def decode_images(files: list[Path], resize: int | None, crop: int | None, mode: str,
                  workers: int | None) -> np.ndarray:
    """All ``files`` as one uint8 ``[N, C, H, W]`` array, decoded in worker processes."""
    out = None
    jobs = [(f, resize, crop, mode) for f in files]
    for i, image in enumerate(parallel_imap(_decode_one, jobs, workers)):
        if out is None:
            out = np.empty((len(files), image.shape[2], image.shape[0], image.shape[1]), np.uint8)
        if image.shape != (out.shape[2], out.shape[3], out.shape[1]):
            raise SpikeguideError(
                f"imagefolder: {files[i]} is {image.shape[1]}x{image.shape[0]} but {files[0]} is "
                f"{out.shape[3]}x{out.shape[2]}; images must share one size: set the resize and "
                "crop options (e.g. resize=256, crop=224)"
            )
        out[i] = image.transpose(2, 0, 1)
    return out


@register_dataset("imagefolder")
def imagefolder(root, split: str, *, resize: int | None = None, crop: int | None = None,
                mode: str = "RGB", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                workers: int | None = None, cache_dir: str | None = None) -> ArrayDataset:
    """Images in class folders, sorted by folder name; files in natural order (9 before 10).

    ``mode`` is "RGB" or "L"; ``mean``/``std`` default to ImageNet's; ``workers`` decode
    processes (default os.cpu_count()); the decoded array is cached under ``cache_dir``.
    """
    check_split("imagefolder", split, ("train", "val", "test"))
    if mode not in ("RGB", "L"):
        raise SpikeguideError(f"imagefolder: mode must be 'RGB' or 'L', got {mode!r}")
    mean, std = tuple(map(float, mean)), tuple(map(float, std))
    if len(mean) != len(mode) or len(std) != len(mode):
        raise SpikeguideError(f"imagefolder: mean and std need {len(mode)} values for mode {mode!r}")
    folder = find_dir(root, FOLDERS[split], "imagefolder", EXPECTED, SOURCE)
    classes = class_dirs(folder, "imagefolder", EXPECTED)
    files, labels = [], []
    for label, class_dir in enumerate(classes):
        images = sorted(
            (f for f in class_dir.iterdir() if f.suffix.lower() in EXTENSIONS),
            key=lambda f: natural_key(f.name),
        )
        if not images:
            raise SpikeguideError(f"imagefolder: class folder {class_dir} holds no .jpg/.png images")
        files += images
        labels += [label] * len(images)

    options = {"resize": resize, "crop": crop, "mode": mode}
    cache = ArrayCache("imagefolder", {"root": str(folder.resolve()), **options}, cache_dir)
    manifest = file_manifest(files, folder)
    cached = cache.load(manifest, ("x",))
    if cached is not None:
        x = cached["x"]
    else:
        x = decode_images(files, resize, crop, mode, workers)
        cache.save(manifest, {"x": x})
    return ArrayDataset(
        x=torch.from_numpy(x),
        y=torch.tensor(labels, dtype=torch.int64),
        classes=[d.name for d in classes],
        mean=mean,
        std=std,
        info={"folder": folder.name, **options, "resample": "bilinear, then center crop"},
    )
