"""docs/extending.md, "A dataset": a builder registered outside the package, in both kinds (held
in memory, and image files that stream), trained two steps through the public API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import spikeguide
from conftest import tiny_config
from spikeguide.config import parse_config
from spikeguide.data import ArrayDataset, ImageFiles, register_dataset
from spikeguide.errors import SpikeguideError
from spikeguide.training.runlog import read_metrics
from spikeguide.training.trainer import TrainSummary


def bars(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a horizontal bright bar, class 1: a vertical one, at random positions."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randint(0, 60, (n, 1, size, size), generator=gen, dtype=torch.uint8)
    at = torch.randint(0, size, (n,), generator=gen)
    for i in range(n):
        if y[i] == 0:
            x[i, 0, at[i], :] = 255
        else:
            x[i, 0, :, at[i]] = 255
    return x, y


@register_dataset("toy_bars")
def toy_bars(root: None, split: str, *, size: int = 8) -> ArrayDataset:
    """In memory: the whole split as tensors."""
    if split not in ("train", "test"):
        raise SpikeguideError(f"toy_bars has splits 'train' and 'test', not {split!r}")
    x, y = bars(128 if split == "train" else 32, size, seed=0 if split == "train" else 1)
    return ArrayDataset(x, y, classes=["horizontal", "vertical"], mean=(0.2,), std=(0.3,),
                        info={"size": size})


@register_dataset("toy_bar_files")
def toy_bar_files(root, split: str, *, size: int = 8) -> ImageFiles:
    """As image files: written once under ``root``, then read by the loader chosen."""
    root = Path(root)
    folder = root / split
    x, y = bars(128 if split == "train" else 32, size, seed=0 if split == "train" else 1)
    names = []
    for i, image in enumerate(x):
        name = f"{int(y[i])}/{i}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / name)
        names.append(name.encode())
    return ImageFiles(folder=folder, names=np.array(names), y=y, classes=["horizontal", "vertical"],
                      mean=(0.2,), std=(0.3,), mode="L", workers=0,
                      cache_dir=str(root / "cache"), info={"size": size})


def two_steps(tmp_path, data: dict) -> TrainSummary:
    return spikeguide.train(parse_config(tiny_config(tmp_path, data=data, train={"epochs": 1})),
                            max_steps=2)


def test_a_dataset_registered_outside_the_package_trains_through_the_public_api(tmp_path):
    summary = two_steps(tmp_path, {"name": "toy_bars", "options": {"size": 8}, "batch_size": 32})
    assert summary.stopped is not None and summary.stopped.step == 2
    header = (tmp_path / "runs" / "tiny" / "config.toml").read_text()
    assert '"dataset": "toy_bars"' in header and '"size": 8' in header


def test_a_file_dataset_streams_or_is_held_in_memory_with_the_same_result(tmp_path):
    weights = {}
    for loader in ("stream", "memory"):
        out = tmp_path / loader
        data = {"name": "toy_bar_files", "root": str(tmp_path / "files"), "loader": loader,
                "batch_size": 32}
        cfg = parse_config(tiny_config(out, data=data, train={"epochs": 1}))
        spikeguide.train(cfg)
        weights[loader] = torch.load(cfg.run_dir / "latest.pt", weights_only=True)["model"]
        assert read_metrics(cfg.run_dir)[0].test.top1 >= 0
    assert all(torch.equal(weights["stream"][k], v) for k, v in weights["memory"].items())


def test_an_option_the_builder_does_not_take_is_a_one_line_error(tmp_path):
    with pytest.raises(SpikeguideError, match="dataset 'toy_bars' has no option 'colour'; "
                                              "its options: size"):
        two_steps(tmp_path, {"name": "toy_bars", "options": {"colour": True}})
