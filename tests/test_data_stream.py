"""The streaming dataset kind and its loader, on a generated miniature ImageNet tree."""

import logging
import os
import signal

import numpy as np
import pytest
import torch

from mini_imagenet import CLASSES, VAL_LABELS, corrupt, make_tree
from spikeguide.data import (
    Augment,
    ImageFiles,
    StreamLoader,
    build_dataset,
    make_loader,
    open_dataset,
)
from spikeguide.data import decode as decode_module
from spikeguide.data.decode import RandomResizedCrop
from spikeguide.data.loader import mix_seed
from spikeguide.errors import SpikeguideError

GEOMETRY = {"resize": 10, "crop": 8}


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGUIDE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("imagenet"))


def files(root, split="train", **options) -> ImageFiles:
    return open_dataset("imagefolder", root, split, **{**GEOMETRY, **options})


def batches(loader, epoch=0, step=0):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader.iter_from(step)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2)
                                    for (x1, y1), (x2, y2) in zip(a, b))


# ---------------------------------------------------------------------------- layouts


def test_train_split_mixed_formats_decode_to_rgb(tree):
    train = files(tree)
    assert isinstance(train, ImageFiles) and train.classes == CLASSES
    assert len(train) == 18 and train.y.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    modes = {os.path.splitext(train.path(i))[1] for i in range(len(train))}
    assert modes == {".JPEG", ".png"}  # RGB, grayscale and CMYK JPEGs, RGBA PNGs
    for i in range(len(train)):
        assert train.read(i).shape == (3, 8, 8) and train.read(i).dtype == np.uint8
    gray = files(tree, mode="L", mean=[0.5], std=[0.2])
    assert gray.in_channels == 1 and gray.read(0).shape == (1, 8, 8)
    assert train.frame_shape == (3, 8, 8) and train.decoded_nbytes() == 18 * 3 * 8 * 8
    assert build_dataset("imagefolder", tree, "train", **GEOMETRY).frame_shape == (3, 8, 8)
    # without a crop the first image tells: 40x30 with its shorter side resized to 10
    assert files(tree, crop=None).frame_shape == (3, 10, 13)


@pytest.mark.parametrize("form", ["devkit", "kaggle", "list"])
def test_flat_val_labels_from_each_ground_truth_form(tmp_path, form):
    root = make_tree(tmp_path, per_class=1, val=form)
    val = files(root, "val")
    assert val.classes == CLASSES and val.y.tolist() == VAL_LABELS
    assert val.info["folder"] == "val" and val.info["labels"] in (
        "ILSVRC2012_validation_ground_truth.txt", "LOC_val_solution.csv", "val.txt")
    # the same images as class folders give the same pixels and labels
    twin = make_tree(tmp_path / "folders", per_class=1, val="folders")
    by_folder = files(twin, "val")
    pixels = {val.path(i).name: (val.read(i), int(val.y[i])) for i in range(len(val))}
    for i in range(len(by_folder)):
        image, label = pixels[by_folder.path(i).name]
        assert np.array_equal(image, by_folder.read(i)) and label == int(by_folder.y[i])
    assert files(root, "test").info["folder"] == "val"  # test falls back to val


def test_flat_val_without_ground_truth_is_a_one_line_error(tmp_path):
    root = make_tree(tmp_path, per_class=1, val="none")
    with pytest.raises(SpikeguideError) as err:
        files(root, "val")
    message = str(err.value)
    assert "\n" not in message and "no class folders and no ground-truth file" in message
    for form in ("LOC_val_solution.csv", "val.txt", "ILSVRC2012_validation_ground_truth.txt"):
        assert form in message


def test_ground_truth_must_match_the_folder(tmp_path):
    root = make_tree(tmp_path, per_class=1, val="list")
    (root / "val" / "ILSVRC2012_val_00000006.JPEG").unlink()
    with pytest.raises(SpikeguideError, match=r"val.txt labels 1 image\(s\) that .* lacks"):
        files(root, "val")
    (root / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 0\n")
    with pytest.raises(SpikeguideError, match="has no label for .*00000002.JPEG"):
        files(root, "val")
    (root / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 7\n")
    with pytest.raises(SpikeguideError, match="label 7 but the training split has 3 classes"):
        files(root, "val")


def test_devkit_ground_truth_needs_every_image_and_meta_mat(tmp_path):
    root = make_tree(tmp_path, per_class=1, val="devkit")
    (root / "meta.mat").unlink()
    with pytest.raises(SpikeguideError, match="meta.mat maps to classes; put meta.mat at"):
        files(root, "val")
    (root / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n")
    with pytest.raises(SpikeguideError, match="has 2 labels for the 6 images"):
        files(root, "val")


# ---------------------------------------------------------------------------- decoding


@pytest.mark.skipif(decode_module.simplejpeg is None, reason="simplejpeg is not installed")
def test_simplejpeg_and_pillow_give_the_same_pixels(tree):
    fast, pillow = files(tree, decoder="simplejpeg"), files(tree, decoder="pillow")
    crop = RandomResizedCrop(flip=True)
    for i in range(len(fast)):
        assert np.array_equal(fast.read(i), pillow.read(i))
        assert np.array_equal(fast.read(i, crop, seed=i), pillow.read(i, crop, seed=i))


def test_unknown_or_missing_decoder(tree, monkeypatch):
    with pytest.raises(SpikeguideError, match="decoder must be one of auto, pillow, simplejpeg"):
        files(tree, decoder="turbo")
    monkeypatch.setattr(decode_module, "simplejpeg", None)
    assert files(tree).decoder == "pillow"  # auto falls back to Pillow
    with pytest.raises(SpikeguideError, match="'simplejpeg' is not installed: pip install"):
        files(tree, decoder="simplejpeg")


def test_random_resized_crop_window_follows_scale_and_ratio():
    crop = RandomResizedCrop(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    gen = torch.Generator().manual_seed(0)
    areas, ratios = [], []
    for _ in range(500):
        left, top, w, h = crop.window(500, 375, torch.rand(40, generator=gen).tolist())
        assert 0 <= left and left + w <= 500 and 0 <= top and top + h <= 375
        areas.append(w * h / (500 * 375))
        ratios.append(w / h)
    # rounding to whole pixels moves the bounds by at most a pixel's worth
    assert 0.08 - 0.005 <= min(areas) and max(areas) <= 1.0
    assert 0.75 - 0.01 <= min(ratios) and max(ratios) <= 4 / 3 + 0.01
    assert max(areas) > 0.9 and min(areas) < 0.15  # the whole range is used
    # no try fits a 1000x10 strip: a center crop clamped to the widest ratio
    assert crop.window(1000, 10, [0.99] * 40) == (493, 0, 13, 10)


def test_random_resized_crop_checks_its_ranges():
    with pytest.raises(SpikeguideError, match="0 < crop_scale"):
        Augment(random_resized_crop=True, crop_scale=(0.5, 0.1))
    with pytest.raises(SpikeguideError, match="crop_ratio"):
        RandomResizedCrop(ratio=(0.0, 1.0))


# ---------------------------------------------------------------------------- determinism


def test_batches_do_not_depend_on_the_worker_count(tree):
    crop = RandomResizedCrop(flip=True)
    runs = []
    for workers in (0, 1, 2):
        loader = make_loader(files(tree, workers=workers), 4, shuffle=True, drop_last=True,
                             seed=3, random_crop=crop)
        runs.append(batches(loader, epoch=1))
    assert len(runs[0]) == 4 and same(runs[0], runs[1]) and same(runs[0], runs[2])


def test_each_sample_is_seeded_by_seed_epoch_and_index(tree):
    train = files(tree, workers=0)
    crop = RandomResizedCrop(flip=True)
    loader = make_loader(train, 4, shuffle=True, drop_last=True, seed=3, random_crop=crop)
    loader.set_epoch(2)
    order = loader.order()
    x, y = next(iter(loader))
    for k in range(4):
        index = int(order[k])
        expected = train.read(index, crop, seed=mix_seed(3, 2, index))
        assert np.array_equal(x[k].numpy(), expected) and int(y[k]) == int(train.y[index])
    assert not same(batches(loader, epoch=2), batches(loader, epoch=3))


def test_iter_from_is_the_tail_of_the_epoch(tree):
    loader = make_loader(files(tree, workers=1), 4, shuffle=True, drop_last=False, seed=1,
                         random_crop=RandomResizedCrop(flip=True))
    full = batches(loader, epoch=2)
    assert len(full) == 5 and same(batches(loader, epoch=2, step=3), full[3:])
    assert batches(loader, epoch=2, step=len(loader)) == []


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_shards_concatenate_to_the_single_process_batch(tree, drop_last):
    crop = RandomResizedCrop(flip=True)
    make = lambda rank, world: make_loader(files(tree, workers=1), 6, shuffle=True,
                                           drop_last=drop_last, seed=5, rank=rank,
                                           world_size=world, random_crop=crop)
    single = batches(make(0, 1), epoch=1)
    shards = [batches(make(r, 2), epoch=1) for r in range(2)]
    joined = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(*shards)]
    assert same(joined, single)


def test_stream_without_random_crop_gives_the_in_memory_batches(tree):
    memory = build_dataset("imagefolder", tree, "train", **GEOMETRY)
    stream = files(tree, workers=2)
    for shuffle, drop_last in ((True, True), (False, False)):
        options = dict(shuffle=shuffle, drop_last=drop_last, seed=4)
        assert same(batches(make_loader(memory, 5, **options), epoch=1),
                    batches(make_loader(stream, 5, **options), epoch=1))


def test_subset_keeps_the_same_samples_in_both_kinds(tree):
    memory = build_dataset("imagefolder", tree, "train", **GEOMETRY).subset(7, seed=2)
    stream = files(tree).subset(7, seed=2)
    assert torch.equal(memory.y, stream.y) and memory.info["subset"] == stream.info["subset"]
    assert all(np.array_equal(memory.x[i].numpy(), stream.read(i)) for i in range(7))
    decoded = stream.decode()  # only the subset is decoded (and cached under its own key)
    assert torch.equal(decoded.x, memory.x) and torch.equal(decoded.y, memory.y)


def test_in_memory_loader_refuses_the_random_crop(tree):
    memory = build_dataset("imagefolder", tree, "train", **GEOMETRY)
    with pytest.raises(SpikeguideError, match="set data.loader = 'stream' or 'auto'"):
        make_loader(memory, 4, shuffle=True, drop_last=True, random_crop=RandomResizedCrop())
    with pytest.raises(SpikeguideError, match="needs the output size: set data.options.crop"):
        make_loader(files(tree, crop=None), 4, shuffle=True, drop_last=True,
                    random_crop=RandomResizedCrop())


def test_augment_of_a_shard_is_the_shard_of_the_augmented_batch():
    x = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8)
    for options in ({"crop_padding": 2, "flip": True, "cutout": 4},
                    {"flip": True, "policy": "autoaugment", "mean": (0.5,) * 3, "std": (0.2,) * 3}):
        augment = Augment(**options)
        whole = augment(x, torch.Generator().manual_seed(7))
        for rank in range(2):
            part = augment(x[4 * rank:4 * rank + 4], torch.Generator().manual_seed(7),
                           shard=(rank, 2))
            assert torch.equal(part, whole[4 * rank:4 * rank + 4])


def test_augment_leaves_the_flip_to_the_loader_with_random_crop():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    augment = Augment(flip=True, random_resized_crop=True)
    assert augment.sample_crop() == RandomResizedCrop(flip=True)
    for seed in range(8):  # never mirrored again on the device
        assert torch.equal(augment(x, torch.Generator().manual_seed(seed)), x / 255.0)
    assert Augment(flip=True).sample_crop() is None


# ---------------------------------------------------------------------------- faults


@pytest.fixture
def broken(tmp_path):
    root = make_tree(tmp_path / "broken")
    corrupt(root / "train" / CLASSES[1] / f"{CLASSES[1]}_2.JPEG")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_file_stops_with_one_line_naming_it(broken, workers):
    loader = make_loader(files(broken, workers=workers), 6, shuffle=False, drop_last=False)
    with pytest.raises(SpikeguideError) as err:
        list(loader)
    message = str(err.value)
    assert "\n" not in message and f"{CLASSES[1]}_2.JPEG" in message
    assert "skip_corrupt" in message
    with pytest.raises(SpikeguideError, match=f"cannot decode .*{CLASSES[1]}_2.JPEG"):
        build_dataset("imagefolder", broken, "train", workers=workers, **GEOMETRY)


def test_skip_corrupt_replaces_by_the_next_readable_image(broken, caplog):
    bad = 6 + 2  # class 1, file 2
    stream = files(broken, skip_corrupt=True, workers=2)
    crop = RandomResizedCrop(flip=True)
    with caplog.at_level(logging.WARNING, logger="spikeguide"):
        first = batches(make_loader(stream, 6, shuffle=False, drop_last=False, random_crop=crop))
    assert [r.getMessage() for r in caplog.records if "skip_corrupt" in r.getMessage()] == [
        f"skip_corrupt: {stream.path(bad)} is corrupt; replaced by {stream.path(bad + 1)}"]
    x, y = first[1]
    assert np.array_equal(x[2].numpy(), stream.read(bad + 1, crop, seed=mix_seed(0, 0, bad)))
    assert int(y[2]) == int(stream.y[bad + 1])
    again = batches(make_loader(files(broken, skip_corrupt=True, workers=0), 6, shuffle=False,
                                drop_last=False, random_crop=crop))
    assert same(first, again)  # deterministic, whatever the workers
    # the in-memory kind replaces it the same way
    memory = build_dataset("imagefolder", broken, "train", skip_corrupt=True, **GEOMETRY)
    plain = batches(make_loader(files(broken, skip_corrupt=True), 6, shuffle=False,
                                drop_last=False))
    assert same(batches(make_loader(memory, 6, shuffle=False, drop_last=False)), plain)
    # a cache written while skipping does not hide the file from a run that does not skip
    with pytest.raises(SpikeguideError, match="cannot decode"):
        build_dataset("imagefolder", broken, "train", **GEOMETRY)


def die_in_worker(self, index, *args, **kwargs):
    if torch.utils.data.get_worker_info() is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_read(self, index, *args, **kwargs)


real_read = ImageFiles.read


def test_a_killed_worker_stops_the_run_with_one_line_instead_of_hanging(tree, monkeypatch):
    monkeypatch.setattr(ImageFiles, "read", die_in_worker)  # forked workers inherit it
    loader = StreamLoader(files(tree, workers=1), 6, shuffle=False, drop_last=False)
    with pytest.raises(SpikeguideError, match=r"a data loader worker stopped \(DataLoader worker "
                                              r".* (killed|exited).*\); the run stopped with it: "
                                              "resume from its last checkpoint") as info:
        list(loader)
    assert "\n" not in str(info.value)


def test_workers_leave_the_terminal_process_group(tree, tmp_path, monkeypatch):
    # Ctrl-C reaches the whole terminal group: the workers must not see it, so that the main
    # process can finish its step and checkpoint (tests/test_stream_train.py sends it)
    def record(self, index, *args, **kwargs):
        (tmp_path / f"{os.getpid()}").write_text(str(os.getpgrp()))
        return real_read(self, index, *args, **kwargs)

    monkeypatch.setattr(ImageFiles, "read", record)
    list(StreamLoader(files(tree, workers=2), 6, shuffle=False, drop_last=False))
    seen = {int(f.name): int(f.read_text()) for f in tmp_path.iterdir() if f.name.isdigit()}
    assert len(seen) == 2 and os.getpid() not in seen
    assert all(group == pid != os.getpgrp() for pid, group in seen.items())
