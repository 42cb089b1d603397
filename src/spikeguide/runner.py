"""From a config to a trained run: data, student, teacher, method, Trainer."""

from __future__ import annotations

import logging
import shutil
from typing import Any

import torch

from .checkpoint import find_checkpoint, load_checkpoint
from .config import Config, parse_config
from .data import ArrayDataset, build_dataset
from .errors import SpikeguideError
from .methods import METHODS, Method
from .models import SpikingNet, create_model, load_twin_weights
from .train import Trainer, resolve_device

log = logging.getLogger("spikeguide")


def build_datasets(cfg: Config) -> tuple[ArrayDataset, ArrayDataset]:
    d = cfg.data
    train = build_dataset(d.name, d.root, "train", **d.options)
    test = build_dataset(d.name, d.root, "test", **d.options)
    if d.train_subset:
        train = train.subset(d.train_subset, seed=cfg.train.seed)
    if d.test_subset:
        test = test.subset(d.test_subset, seed=cfg.train.seed)
    if train.is_temporal and train.x.shape[1] != cfg.model.T:
        raise SpikeguideError(
            f"model.T is {cfg.model.T} but the event data has {train.x.shape[1]} frames a sample; "
            "set model.T and the dataset's frames option to the same value"
        )
    return train, test


def build_model(cfg: Config, num_classes: int, in_channels: int, spiking: bool) -> SpikingNet:
    m, n, s = cfg.model, cfg.neuron, cfg.surrogate
    neuron_options = {"threshold": n.threshold, "reset": n.reset, "detach_reset": n.detach_reset}
    if n.decay is not None:
        neuron_options["decay"] = n.decay
    return create_model(m.name, num_classes=num_classes, in_channels=in_channels,
                        spiking=spiking, T=m.T, neuron=n.kind, neuron_options=neuron_options,
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


def check_compatible(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    for key in own.keys() | state.keys():
        if key not in own or key not in state:
            raise SpikeguideError(f"{source} holds weights of another architecture "
                                  f"({key!r} is in only one of them)")
        if own[key].shape != state[key].shape:
            raise SpikeguideError(f"{source} does not fit: {key} has shape "
                                  f"{tuple(state[key].shape)}, this model needs "
                                  f"{tuple(own[key].shape)} (another width or class count?)")


def load_teacher(cfg: Config, train_set: ArrayDataset) -> SpikingNet:
    """The frozen ANN teacher named by ``teacher.checkpoint``: the student's ANN twin."""
    if cfg.teacher.checkpoint is None:
        raise SpikeguideError(f"method {cfg.method.name!r} needs a teacher: set "
                              "teacher.checkpoint to an ANN run directory or checkpoint")
    teacher, tcfg, _ = load_model(cfg.teacher.checkpoint)
    if teacher.spiking:
        raise SpikeguideError(f"teacher {cfg.teacher.checkpoint!r} is a spiking model; the "
                              "teacher must be an ANN (method 'ann')")
    if tcfg.model.name != cfg.model.name or teacher.num_classes != train_set.num_classes:
        raise SpikeguideError(
            f"teacher {cfg.teacher.checkpoint!r} is a {tcfg.model.name} with "
            f"{teacher.num_classes} classes; the student is a {cfg.model.name} with "
            f"{train_set.num_classes} classes"
        )
    return teacher


def build_method(cfg: Config, train_set: ArrayDataset) -> Method:
    method_cls = METHODS.get(cfg.method.name)
    student = build_model(cfg, train_set.num_classes, train_set.in_channels,
                          method_cls.spiking_student)
    wants_teacher = method_cls.needs_teacher or cfg.teacher.init_student
    teacher = load_teacher(cfg, train_set) if wants_teacher else None
    if cfg.teacher.init_student:
        load_twin_weights(student, teacher.state_dict())
        log.info("student initialized from teacher %s", cfg.teacher.checkpoint)
    return method_cls(student, cfg.method.options, teacher=teacher if method_cls.needs_teacher else None,
                      label_smoothing=cfg.train.label_smoothing)


def prepare_run_dir(cfg: Config, resume: bool, overwrite: bool) -> None:
    run_dir = cfg.run_dir
    has_ckpt = (run_dir / "latest.pt").exists()
    if resume and not has_ckpt:
        raise SpikeguideError(f"nothing to resume: {str(run_dir / 'latest.pt')!r} does not exist")
    if has_ckpt and not resume:
        if not overwrite:
            raise SpikeguideError(
                f"run directory {str(run_dir)!r} already holds a run: pass --resume to continue "
                "it, --overwrite to start over, or --set name=OTHER"
            )
        shutil.rmtree(run_dir)


def train(cfg: Config, *, resume: bool = False, overwrite: bool = False,
          max_steps: int | None = None) -> dict[str, Any]:
    """Train the run ``cfg`` describes; returns the Trainer's summary plus the run directory."""
    prepare_run_dir(cfg, resume, overwrite)
    train_set, test_set = build_datasets(cfg)
    method = build_method(cfg, train_set)
    trainer = Trainer(cfg, method, train_set, test_set, device=resolve_device(cfg.train.device))
    if resume:
        state = load_checkpoint(cfg.run_dir / "latest.pt", map_location=trainer.device)
        check_compatible(method.student, state["model"], str(cfg.run_dir / "latest.pt"))
        trainer.load_state_dict(state)
        log.info("resumed %s at epoch %d step %d", cfg.run_dir, trainer.epoch, trainer.step)
    summary = trainer.fit(max_steps=max_steps)
    summary["run_dir"] = str(cfg.run_dir)
    return summary
