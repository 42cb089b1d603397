"""From a config to a trained run: data, student, teacher, method, Trainer."""

from __future__ import annotations

import logging
import shutil
from typing import Any

import torch

from .checkpoint import find_checkpoint, load_checkpoint
from .config import Config, parse_config
from .data import ArrayDataset, build_dataset
from .distributed import barrier, init_distributed, local_device
from .errors import SpikeguideError
from .methods import METHODS, Method
from .models import SpikingNet, create_model, load_twin_weights
from .teacher import prepare_teacher, teacher_summary
from .train import Trainer, resolve_device

log = logging.getLogger("spikeguide")


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
    neuron_options = {"threshold": n.threshold, "reset": n.reset, "detach_reset": n.detach_reset,
                      "backend": n.backend}
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
    unmatched = sorted(own.keys() ^ state.keys())
    if unmatched:
        raise SpikeguideError(f"{source} holds weights of another architecture "
                              f"({unmatched[0]!r} is in only one of them)")
    for key in own:
        if own[key].shape != state[key].shape:
            raise SpikeguideError(f"{source} does not fit: {key} has shape "
                                  f"{tuple(state[key].shape)}, this model needs "
                                  f"{tuple(own[key].shape)} (another width or class count?)")


def build_method(cfg: Config, train_set: ArrayDataset, test_set: ArrayDataset | None = None,
                 teacher_record: dict[str, Any] | None = None) -> Method:
    """The method and its student; a teacher is loaded when the method or
    ``teacher.init_student`` needs one, and its test record (``teacher_record``, or evaluated on
    ``test_set`` when given) is written to the run directory."""
    method_cls = METHODS.get(cfg.method.name)
    student = build_model(cfg, train_set.num_classes, train_set.in_channels,
                          method_cls.spiking_student)
    guided = method_cls.teacher_needed(cfg.method.options)
    teacher = prepare_teacher(cfg, student, test_set, teacher_record) if guided or cfg.teacher.init_student else None
    if cfg.teacher.init_student:
        load_twin_weights(student, teacher.state_dict())
        log.info("student initialized from teacher %s", cfg.teacher.checkpoint)
    return method_cls(student, cfg.method.options, teacher=teacher if guided else None,
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
          max_steps: int | None = None, teacher_record: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """Train the run ``cfg`` describes; returns the Trainer's summary plus the run directory.

    ``teacher_record``: the teacher's test record when the caller has already evaluated it
    (an ablation's cells share one), so that it is not evaluated again.

    Under torchrun every process calls this; rank 0 alone prepares the run directory.
    """
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device)
    device = local_device(device, dist)
    if dist.is_main:
        prepare_run_dir(cfg, resume, overwrite)
    if not dist.is_main:  # rank 0 decodes and caches the data first, the others then read it
        barrier(dist)
    train_set, test_set = build_datasets(cfg)
    if dist.is_main:
        barrier(dist)
    torch.manual_seed(cfg.train.seed)  # the same initial weights in every process and rerun
    # the teacher is evaluated and recorded by one process
    method = build_method(cfg, train_set, test_set if dist.is_main else None,
                          teacher_record if dist.is_main else None)
    trainer = Trainer(cfg, method, train_set, test_set, device=device, dist=dist)
    if resume:
        state = load_checkpoint(cfg.run_dir / "latest.pt", map_location=trainer.device)
        check_compatible(method.student, state["model"], str(cfg.run_dir / "latest.pt"))
        trainer.load_state_dict(state)
        log.info("resumed %s at epoch %d step %d", cfg.run_dir, trainer.epoch, trainer.step)
    summary = trainer.fit(max_steps=max_steps)
    # rank 0 writes the last checkpoint; no process may read the run (a teacher trained first, say)
    # before it is there
    barrier(dist)
    summary["run_dir"] = str(cfg.run_dir)
    summary.update(teacher_summary(cfg.run_dir))
    return summary
