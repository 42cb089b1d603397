"""A miniature ImageNet tree for the streaming tests: class folders named like WordNet ids,
images of mixed sizes and formats (RGB, grayscale and CMYK JPEG, RGBA PNG), and a flat ``val/``
with its ground truth in each of the forms ImageNet copies ship."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["n01440764", "n01443537", "n01484850"]
# the devkit numbers classes in its own order, not by WordNet id
DEVKIT_IDS = {"n01440764": 3, "n01443537": 1, "n01484850": 2}
SIZES = [(40, 30), (30, 44), (36, 36), (52, 28)]  # (width, height)
VAL_LABELS = [2, 0, 1, 1, 0, 2]


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    """Smooth colour fields (JPEG keeps them close to the original), different per seed."""
    coarse = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.BICUBIC)


def save_image(path: Path, seed: int, size: tuple[int, int], kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = picture(seed, size)
    if kind == "gray":
        image.convert("L").save(path, "JPEG", quality=90)
    elif kind == "cmyk":
        image.convert("CMYK").save(path, "JPEG", quality=90)
    elif kind == "rgba":
        rgba = image.convert("RGBA")
        rgba.putalpha(128)
        rgba.save(path, "PNG")
    else:
        image.save(path, "JPEG", quality=90)


KINDS = ["rgb", "gray", "rgb", "cmyk", "rgb", "rgba"]


def make_tree(root: Path, per_class: int = 6, val: str = "devkit") -> Path:
    """``root/train/<wnid>/*`` and ``root/val``: ``"folders"`` (class folders) or flat with the
    ground truth of ``"devkit"``, ``"kaggle"`` or ``"list"``, or ``"none"``."""
    seed = 0
    for label, wnid in enumerate(CLASSES):
        for k in range(per_class):
            kind = KINDS[(k + label) % len(KINDS)]
            suffix = "png" if kind == "rgba" else "JPEG"
            save_image(root / "train" / wnid / f"{wnid}_{k}.{suffix}", seed, SIZES[seed % 4], kind)
            seed += 1
    names = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(len(VAL_LABELS))]
    for i, (name, label) in enumerate(zip(names, VAL_LABELS)):
        folder = root / "val" / CLASSES[label] if val == "folders" else root / "val"
        save_image(folder / name, 1000 + i, SIZES[i % 4], KINDS[i % 4])
    if val == "devkit":
        (root / "ILSVRC2012_validation_ground_truth.txt").write_text(
            "".join(f"{DEVKIT_IDS[CLASSES[label]]}\n" for label in VAL_LABELS))
        write_meta_mat(root / "meta.mat")
    elif val == "kaggle":
        rows = [f"{Path(n).stem},{CLASSES[label]} 1 2 30 28" for n, label in zip(names, VAL_LABELS)]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows))
    elif val == "list":  # Caffe's form: 0-based indices into the sorted classes
        (root / "val.txt").write_text(
            "".join(f"{n} {label}\n" for n, label in zip(names, VAL_LABELS)))
    return root


def write_meta_mat(path: Path) -> None:
    """The devkit's synsets table: the leaf classes and one inner node (not a class)."""
    from scipy.io import savemat

    rows = [(i, wnid, 0) for wnid, i in DEVKIT_IDS.items()] + [(1001, "n00000001", 3)]
    table = np.array(rows, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    savemat(path, {"synsets": table})


def corrupt(path: Path) -> Path:
    """Cut the file to its first bytes: a JPEG header with no image data."""
    path.write_bytes(path.read_bytes()[:40])
    return path
