"""``imagefolder``: ``root/{train,val|test}/<class>/*.jpg|png``, or ImageNet's flat ``val/``.

The builder lists the files and returns an :class:`ImageFiles`: the streaming loader decodes it
batch by batch, ``build_dataset`` decodes it whole into memory (cached).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import SpikeguideError
from .decode import resolve_decoder
from .imagefiles import ImageFiles
from .imagenet_val import expected_layout, flat_labels
from .layout import check_split, find_dir, natural_key, subfolders
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


def images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, in natural order (``9.jpg`` before ``10.jpg``)."""
    return sorted((f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in EXTENSIONS),
                  key=lambda f: natural_key(f.name))


def list_class_folders(folder: Path, classes: list[Path]) -> tuple[list[str], list[int]]:
    names, labels = [], []
    for label, class_dir in enumerate(classes):
        images = images_in(class_dir)
        if not images:
            raise SpikeguideError(f"imagefolder: class folder {class_dir} holds no .jpg/.png images")
        names += [f"{class_dir.name}/{f.name}" for f in images]
        labels += [label] * len(images)
    return names, labels


def list_split(root, split: str) -> tuple[Path, list[str], list[int], list[str], dict]:
    """The split's folder, its files (relative), labels, class names and where labels came from."""
    folder = find_dir(root, FOLDERS[split], "imagefolder", EXPECTED, SOURCE)
    classes = subfolders(folder)
    if classes:
        names, labels = list_class_folders(folder, classes)
        return folder, names, labels, [d.name for d in classes], {"folder": folder.name}
    loose = [f.name for f in images_in(folder)]
    if not loose or split == "train":
        raise SpikeguideError(f"imagefolder: {folder} has no class folders; expected "
                              f"{EXPECTED if split == 'train' else expected_layout(folder)}")
    # ImageNet's own validation layout: the classes are the training split's
    train = subfolders(find_dir(root, FOLDERS["train"], "imagefolder", EXPECTED, SOURCE))
    class_names = [d.name for d in train]
    labels, source = flat_labels(folder, Path(root).expanduser(), loose, class_names)
    return folder, loose, labels, class_names, {"folder": folder.name, "labels": source.name}


@register_dataset("imagefolder")
def imagefolder(root, split: str, *, resize: int | None = None, crop: int | None = None,
                mode: str = "RGB", mean=IMAGENET_MEAN, std=IMAGENET_STD, decoder: str = "auto",
                skip_corrupt: bool = False, workers: int | None = None,
                cache_dir: str | None = None) -> ImageFiles:
    """Images in class folders, sorted by folder name; files in natural order (9 before 10).

    ``mode`` is "RGB" or "L"; ``mean``/``std`` default to ImageNet's; ``decoder`` "auto"
    (simplejpeg where installed, else Pillow), "pillow" or "simplejpeg"; ``skip_corrupt``
    replaces an unreadable file by the next readable one instead of stopping; ``workers``
    decode processes; ``cache_dir`` holds the split decoded in memory.
    """
    check_split("imagefolder", split, ("train", "val", "test"))
    if mode not in ("RGB", "L"):
        raise SpikeguideError(f"imagefolder: mode must be 'RGB' or 'L', got {mode!r}")
    mean, std = tuple(map(float, mean)), tuple(map(float, std))
    if len(mean) != len(mode) or len(std) != len(mode):
        raise SpikeguideError(f"imagefolder: mean and std need {len(mode)} values for mode {mode!r}")
    decoder = resolve_decoder(decoder)
    folder, names, labels, classes, info = list_split(root, split)
    return ImageFiles(
        folder=folder,
        names=np.array([os.fsencode(n) for n in names], dtype=np.bytes_),
        y=torch.tensor(labels, dtype=torch.int64),
        classes=classes, mean=mean, std=std, mode=mode, resize=resize, crop=crop,
        decoder=decoder, skip_corrupt=skip_corrupt, workers=workers, cache_dir=cache_dir,
        info={**info, "resize": resize, "crop": crop, "mode": mode, "decoder": decoder},
    )
