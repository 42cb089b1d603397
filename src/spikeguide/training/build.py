"""From a config to its parts: the datasets, the model, and a trained model from a checkpoint."""

from __future__ import annotations

from typing import Any

from ..config import Config, parse_config
from ..data import ArrayDataset, build_dataset
from ..errors import SpikeguideError
from ..methods import METHODS
from ..models import SpikingNet, create_model
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
    if train.is_temporal and train.x.shape[1] != cfg.model.T:
        raise SpikeguideError(
            f"model.T is {cfg.model.T} but the event data has {train.x.shape[1]} frames a sample; "
            "set model.T and the dataset's frames option to the same value"
        )
    return train, test


def build_model(cfg: Config, num_classes: int, in_channels: int, spiking: bool) -> SpikingNet:
    m, n, s = cfg.model, cfg.neuron, cfg.surrogate
    return create_model(m.name, num_classes=num_classes, in_channels=in_channels,
                        spiking=spiking, T=m.T, neuron=n.kind, neuron_options=n.arguments(),
                        surrogate=s.name, surrogate_width=s.width, repact=m.repact, width=m.width,
                        **m.options)


def load_model(path: str, prefer: str = "best") -> tuple[SpikingNet, Config, dict[str, Any]]:
    """Rebuild a run's model from its checkpoint (a file or a run directory)."""
    ckpt = load_checkpoint(find_checkpoint(path, prefer))
    cfg = parse_config(ckpt["config"])
    method = METHODS.get(cfg.method.name)
    info = ckpt["data"]
    model = build_model(cfg, info["num_classes"], info["in_channels"], method.spiking_student)
    check_compatible(model, ckpt["model"], str(path))
    model.load_state_dict(ckpt["model"])
    return model, cfg, ckpt


def check_compatible(model, state, source: str) -> None:
    own = model.state_dict()
    unmatched = sorted(own.keys() ^ state.keys())
    if unmatched:
        raise SpikeguideError(f"{source} holds weights of another architecture "
                              f"({unmatched[0]!r} is in only one of them)")
    for key in own:
        if own[key].shape != state[key].shape:
            raise SpikeguideError(f"{source} does not fit: {key} has shape "
                                  f"{tuple(state[key].shape)}, this model needs "
                                  f"{tuple(own[key].shape)} (another width or class count?)")
