import os

import numpy as np
import pytest
import torch
from PIL import Image

from spikeguide.data import ImageFiles, build_dataset, imagefolder
from spikeguide.errors import SpikeguideError


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGUIDE_CACHE", str(tmp_path / "cache"))


def pixels(seed, h=4, w=5):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path, array, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, fmt)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    # names sort naturally: 2 before 10; classes sort by folder name
    for name, seed in (("10.png", 1), ("2.png", 2)):
        save(root / "train" / "dog" / name, pixels(seed))
    save(root / "train" / "cat" / "1.png", pixels(3))
    (root / "train" / "cat" / "notes.txt").write_text("ignored")
    save(root / "val" / "cat" / "5.png", pixels(4))
    save(root / "val" / "dog" / "6.png", pixels(5))
    return root


def test_png_exact_pixels_order_and_labels(folder):
    ds = build_dataset("imagefolder", folder, "train", workers=1)
    assert ds.classes == ["cat", "dog"] and ds.y.tolist() == [0, 1, 1]
    assert ds.x.shape == (3, 3, 4, 5) and ds.x.dtype == torch.uint8
    for i, seed in enumerate((3, 2, 1)):
        assert np.array_equal(ds.x[i].permute(1, 2, 0).numpy(), pixels(seed))
    assert ds.mean == imagefolder.IMAGENET_MEAN
    assert ds.info["folder"] == "train" and ds.info["resize"] is None


def test_test_split_falls_back_to_val(folder):
    ds = build_dataset("imagefolder", folder, "test", workers=1)
    assert ds.info["folder"] == "val" and ds.y.tolist() == [0, 1]
    (folder / "val").rename(folder / "test")
    assert build_dataset("imagefolder", folder, "val", workers=1).info["folder"] == "test"


def test_parallel_decode_matches_serial(folder):
    serial = build_dataset("imagefolder", folder, "train", workers=1, cache_dir=folder / "c1")
    parallel = build_dataset("imagefolder", folder, "train", workers=2, cache_dir=folder / "c2")
    assert torch.equal(serial.x, parallel.x)


def test_jpeg_and_grayscale(tmp_path):
    flat = np.full((6, 6, 3), 200, np.uint8)
    save(tmp_path / "train" / "a" / "x.JPEG", flat, "JPEG")
    ds = build_dataset("imagefolder", tmp_path, "train", workers=1)
    assert ds.x.shape == (1, 3, 6, 6) and (ds.x.int() - 200).abs().max() <= 2
    gray = build_dataset("imagefolder", tmp_path, "train", workers=1, mode="L", mean=[0.5], std=[0.2])
    assert gray.x.shape == (1, 1, 6, 6) and gray.in_channels == 1


def test_resize_shorter_side_then_center_crop(tmp_path):
    image = np.zeros((4, 8, 3), np.uint8)  # H=4, W=8
    image[:, 1:7] = 255  # a bright middle band: all that the center crop keeps
    save(tmp_path / "train" / "a" / "wide.png", image)
    save(tmp_path / "train" / "a" / "tall.png", np.full((10, 6, 3), 255, np.uint8))
    with pytest.raises(SpikeguideError, match="wide.png is 8x4 but .*tall.png is 6x10.*resize and crop"):
        build_dataset("imagefolder", tmp_path, "train", workers=1)
    ds = build_dataset("imagefolder", tmp_path, "train", workers=1, resize=2, crop=2)
    assert ds.x.shape == (2, 3, 2, 2) and (ds.x == 255).all()
    with pytest.raises(SpikeguideError, match="smaller than crop=5"):
        build_dataset("imagefolder", tmp_path, "train", workers=1, crop=5)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_image_names_the_file(tmp_path, damage):
    save(tmp_path / "train" / "a" / "good.jpg", pixels(1, 32, 32), "JPEG")
    bad = tmp_path / "train" / "a" / "bad.jpg"
    save(bad, pixels(2, 32, 32), "JPEG")
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not an image at all")
    for workers in (1, 2):
        with pytest.raises(SpikeguideError, match="cannot decode .*bad.jpg"):
            build_dataset("imagefolder", tmp_path, "train", workers=workers)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(SpikeguideError, match=r"no data found .*\{train,val or test\}/<class>"):
        build_dataset("imagefolder", tmp_path, "train")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(SpikeguideError, match="class folder .*a holds no"):
        build_dataset("imagefolder", tmp_path, "train")


def test_cache_is_reused_then_invalidated_by_a_changed_file(folder, monkeypatch):
    first = build_dataset("imagefolder", folder, "train", workers=1)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(ImageFiles, "decode_uncached", no_decoding)
    again = build_dataset("imagefolder", folder, "train", workers=1)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)

    changed = folder / "train" / "dog" / "2.png"
    save(changed, pixels(99))
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse-grained filesystems
    with pytest.raises(AssertionError, match="decoded although"):
        build_dataset("imagefolder", folder, "train", workers=1)
    monkeypatch.undo()
    monkeypatch.setenv("SPIKEGUIDE_CACHE", str(folder.parent / "cache"))
    fresh = build_dataset("imagefolder", folder, "train", workers=1)
    assert np.array_equal(fresh.x[1].permute(1, 2, 0).numpy(), pixels(99))


def test_cache_is_keyed_by_decode_options(folder, monkeypatch):
    build_dataset("imagefolder", folder, "train", workers=1)
    calls = []
    real = ImageFiles.decode_uncached
    monkeypatch.setattr(ImageFiles, "decode_uncached", lambda *a: calls.append(a) or real(*a))
    small = build_dataset("imagefolder", folder, "train", workers=1, resize=2, crop=2)
    assert small.x.shape[-2:] == (2, 2) and len(calls) == 1
    build_dataset("imagefolder", folder, "train", workers=1)
    build_dataset("imagefolder", folder, "train", workers=1, resize=2, crop=2)
    assert len(calls) == 1


def test_unwritable_cache_warns_and_still_loads(folder, tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="could not write the data cache"):
        ds = build_dataset("imagefolder", folder, "train", workers=1, cache_dir=blocker)
    assert len(ds) == 3


def test_splits_with_other_class_folders_are_refused(folder, tmp_path):
    from spikeguide.config import parse_config
    from spikeguide.training.build import build_datasets

    save(folder / "val" / "bird" / "7.png", pixels(6))  # a class the train split lacks
    cfg = parse_config({"data": {"name": "imagefolder", "root": str(folder),
                                 "options": {"workers": 1, "cache_dir": str(tmp_path / "c")}}})
    with pytest.raises(SpikeguideError, match=r"the train and test splits have different classes "
                                              r"\(2 and 3; first difference: bird\)"):
        build_datasets(cfg)
