"""From a config to its parts: the datasets, the model, and a trained model from a checkpoint."""

from __future__ import annotations

import copy
from typing import Any, Sequence

from ..config import Config, apply_overrides, parse_config
from ..data import ArrayDataset, build_dataset
from ..errors import SpikeguideError
from ..methods import METHODS
from ..models import SpikingNet, checked_weights, create_model
from .checkpoint import find_checkpoint, load_checkpoint


def build_test_set(cfg: Config) -> ArrayDataset:
    d = cfg.data
    test = build_dataset(d.name, d.root, "test", **d.options)
    return test.subset(d.test_subset, seed=cfg.train.seed) if d.test_subset else test


def build_datasets(cfg: Config) -> tuple[ArrayDataset, ArrayDataset]:
    d = cfg.data
    train = build_dataset(d.name, d.root, "train", **d.options)
    test = build_test_set(cfg)
    if d.train_subset:
        train = train.subset(d.train_subset, seed=cfg.train.seed)
    check_frames(cfg, train)
    return train, test


def check_frames(cfg: Config, dataset: ArrayDataset) -> None:
    """Event data runs one time step per frame: model.T must be the frame count."""
    if dataset.is_temporal and dataset.x.shape[1] != cfg.model.T:
        raise SpikeguideError(
            f"model.T is {cfg.model.T} but the event data has {dataset.x.shape[1]} frames a "
            "sample (a model runs one step per frame); set model.T and the dataset's frames "
            "option to the same value"
        )


def build_model(cfg: Config, num_classes: int, in_channels: int, spiking: bool) -> SpikingNet:
    m, n, s = cfg.model, cfg.neuron, cfg.surrogate
    neuron_options = {"threshold": n.threshold, "reset": n.reset, "detach_reset": n.detach_reset,
                      "backend": n.backend}
    if n.decay is not None:
        neuron_options["decay"] = n.decay
    return create_model(m.name, num_classes=num_classes, in_channels=in_channels,
                        spiking=spiking, T=m.T, neuron=n.kind, neuron_options=neuron_options,
                        surrogate=s.name, surrogate_width=s.width, repact=m.repact, width=m.width,
                        **m.options)


def load_model(path: str, prefer: str = "best", overrides: Sequence[str] = ()
               ) -> tuple[SpikingNet, Config, dict[str, Any]]:
    """Rebuild a run's model from its checkpoint (a file or a run directory), from the run's
    config with the ``key=value`` ``overrides`` applied (they must leave the weights' shapes
    as they are)."""
    ckpt = load_checkpoint(find_checkpoint(path, prefer))
    cfg = parse_config(apply_overrides(copy.deepcopy(ckpt["config"]), list(overrides)))
    method = METHODS.get(cfg.method.name)
    info = ckpt["data"]
    model = build_model(cfg, info["num_classes"], info["in_channels"], method.spiking_student)
    model.load_state_dict(checked_weights(model, ckpt["model"], str(path)))
    return model, cfg, ckpt
