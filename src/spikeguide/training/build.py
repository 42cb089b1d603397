"""From a config to its parts: the datasets, the model, and a trained model from a checkpoint."""

from __future__ import annotations

import copy
import logging
from typing import Any, Sequence

import torch

from ..config import Config, MethodConfig, apply_overrides, parse_config
from ..data import Dataset, ImageFiles, choose_loader, open_dataset
from ..data.base import hold_out
from ..errors import SpikeguideError
from ..methods import METHODS
from ..models import SpikingNet, checked_weights, create_model
from .checkpoint import find_checkpoint, load_checkpoint
from .distributed import resolve_device

log = logging.getLogger("spikeguide")


def build_splits(cfg: Config, splits: tuple[str, ...], device: torch.device | None = None
                 ) -> list[Dataset]:
    """The ``splits`` of the run's data (subsets applied), in memory or as files to stream as
    ``data.loader`` decides for all of them together (``device``: where training runs; default
    ``train.device``). The choice and its reason are logged and go into each split's info.

    ``data.val_split`` holds its samples out of "train" before ``data.train_subset`` applies;
    they are the split "val", which needs "train" among ``splits``."""
    d = cfg.data
    subsets = {"train": d.train_subset, "test": d.test_subset, "val": None}
    opened = {}
    for split in splits:
        if split == "val":
            continue
        dataset = open_dataset(d.name, d.root, split, **d.options)
        if split == "train" and d.val_split:
            dataset, opened["val"] = hold_out(dataset, d.val_split, d.val_seed)
        opened[split] = (dataset.subset(subsets[split], seed=cfg.train.seed)
                         if subsets[split] else dataset)
    datasets = [opened[split] for split in splits]
    check_same_classes(datasets, splits)
    choice = choose_loader(d.loader, datasets,
                           random_crop=d.augment.random_resized_crop and "train" in splits,
                           device=device or resolve_device(cfg.train.device),
                           ram_share=d.ram_share, gpu_share=d.gpu_share)
    log.info("data loader: %s (%s)", choice.kind, choice.reason)
    if choice.kind == "memory":
        datasets = [ds.decode() if isinstance(ds, ImageFiles) else ds for ds in datasets]
    for dataset in datasets:
        dataset.info = {**dataset.info, "loader": choice.kind, "loader_reason": choice.reason}
    return datasets


def check_same_classes(datasets: list[Dataset], splits: tuple[str, ...]) -> None:
    """The splits number the same classes the same way (class folders, say, where a split that
    lacks a folder would shift every label after it)."""
    first = datasets[0].classes
    for split, dataset in zip(splits[1:], datasets[1:]):
        if dataset.classes != first:
            differ = sorted(set(first) ^ set(dataset.classes)) or ["(the same names in another order)"]
            raise SpikeguideError(
                f"the {splits[0]} and {split} splits have different classes ({len(first)} and "
                f"{len(dataset.classes)}; first difference: {differ[0]}): every split needs the "
                "same class folders")


def build_test_set(cfg: Config, device: torch.device | None = None) -> Dataset:
    return build_splits(cfg, ("test",), device)[0]


def build_datasets(cfg: Config, device: torch.device | None = None) -> tuple[Dataset, Dataset]:
    """The training split (``data.val_split`` held out of it) and the test split."""
    train, test = build_splits(cfg, ("train", "test"), device)
    check_frames(cfg, train)
    return train, test


def build_run_datasets(cfg: Config, device: torch.device | None = None
                       ) -> tuple[Dataset, Dataset | None, Dataset]:
    """The training, validation (None without ``data.val_split``) and test splits."""
    if not cfg.data.val_split:
        train, test = build_datasets(cfg, device)
        return train, None, test
    train, val, test = build_splits(cfg, ("train", "val", "test"), device)
    check_frames(cfg, train)
    return train, val, test


def check_frames(cfg: Config, dataset: Dataset) -> None:
    """Event data runs one time step per frame: model.T must be the frame count."""
    if dataset.is_temporal and dataset.x.shape[1] != cfg.model.T:
        raise SpikeguideError(
            f"model.T is {cfg.model.T} but the event data has {dataset.x.shape[1]} frames a "
            "sample (a model runs one step per frame); set model.T and the dataset's frames "
            "option to the same value"
        )


def build_model(cfg: Config, num_classes: int, in_channels: int, spiking: bool) -> SpikingNet:
    m, n, s = cfg.model, cfg.neuron, cfg.surrogate
    return create_model(m.name, num_classes=num_classes, in_channels=in_channels,
                        spiking=spiking, T=m.T, neuron=n.kind, neuron_options=n.arguments(),
                        surrogate=s.name, surrogate_width=s.width, repact=m.repact, width=m.width,
                        fuse_bn=n.fuse_bn, **m.options)


def run_config(raw: dict, ckpt: dict[str, Any]) -> tuple[Config, bool]:
    """A checkpoint's config, and whether its model spikes. The training method is not needed
    where the checkpoint records the latter: a run of a method registered outside the package
    is rebuilt without it (its config then keeps the method's name, not its options)."""
    name = raw.get("method", {}).get("name", "bptt")
    if name in METHODS or "spiking" not in ckpt:
        cfg = parse_config(raw)
        return cfg, ckpt.get("spiking", METHODS.get(cfg.method.name).spiking_student)
    cfg = parse_config({**raw, "method": {"name": "bptt"}})
    cfg.method = MethodConfig(name, None)
    return cfg, ckpt["spiking"]


def load_model(path: str, prefer: str = "best", overrides: Sequence[str] = ()
               ) -> tuple[SpikingNet, Config, dict[str, Any]]:
    """Rebuild a run's model from its checkpoint (a file or a run directory), from the run's
    config with the ``key=value`` ``overrides`` applied (they must leave the weights' shapes
    as they are)."""
    ckpt = load_checkpoint(find_checkpoint(path, prefer))
    cfg, spiking = run_config(apply_overrides(copy.deepcopy(ckpt["config"]), list(overrides)), ckpt)
    info = ckpt["data"]
    model = build_model(cfg, info["num_classes"], info["in_channels"], spiking)
    model.load_state_dict(checked_weights(model, ckpt["model"], str(path)))
    return model, cfg, ckpt
