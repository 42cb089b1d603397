"""From a config to a trained run: data, student, teacher, method, Trainer.

:func:`train` trains one run; :func:`ensure_trained` trains a run unless its directory already
holds it finished (a teacher recipe trained before its student, the cells of ``spikeguide
ablate``).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from typing import Any, Sequence

import torch

from ..config import Config, read_toml
from ..data import Dataset
from ..errors import SpikeguideError, TrainingStopped
from ..methods import METHODS, Method
from ..models import checked_weights, load_twin_weights
from ..neurons.kernels import empty_cache
from .build import build_model, build_run_datasets
from .checkpoint import LATEST, UnreadableCheckpoint, load_checkpoint
from .configdiff import check_resume_config, config_differences
from .distributed import (
    DistInfo,
    barrier,
    barrier_if_joined,
    init_distributed,
    local_device,
    resolve_device,
)
from .resume import Resume, after_restart, has_checkpoint, read_resume_point, wants_resume
from .teacher import (
    followed_data,
    prepare_teacher,
    recorded_teacher_top1,
    teacher_config,
    teacher_source,
    teacher_spent_seconds,
)
from .threads import set_threads
from .trainer import Trainer, TrainSummary

log = logging.getLogger("spikeguide")


def build_method(cfg: Config, train_set: Dataset, test_set: Dataset | None = None,
                 teacher_record: dict[str, Any] | None = None) -> Method:
    """The method and its student; a teacher is loaded when the method or
    ``teacher.init_student`` needs one, and its test record (``teacher_record``, or evaluated on
    ``test_set`` when given) is written to the run directory."""
    method_cls = METHODS.get(cfg.method.name)
    student = build_model(cfg, train_set.num_classes, train_set.in_channels,
                          method_cls.spiking_student)
    guided = method_cls.teacher_needed(cfg.method.options)
    teacher = (prepare_teacher(cfg, student, test_set, teacher_record, train_set.frame_shape)
               if uses_teacher(cfg) else None)
    if cfg.teacher.init_student:
        source = teacher_source(cfg)
        load_twin_weights(student, teacher.state_dict(), f"teacher {source}")
        log.info("student initialized from teacher %s", source)
    return method_cls(student, cfg.method.options, teacher=teacher if guided else None,
                      label_smoothing=cfg.train.label_smoothing)


def prepare_run_dir(cfg: Config, resume: Resume, overwrite: bool, dist: DistInfo) -> bool:
    """Every process checks the run directory, so that a mistake stops all of them with the same
    line (under torchrun, one process failing alone would leave the others waiting at the next
    barrier); the first process removes an overwritten run. Returns whether the run resumes."""
    run_dir = cfg.run_dir
    resume = wants_resume(resume, run_dir)
    if has_checkpoint(run_dir) and not resume:
        if not overwrite:
            raise SpikeguideError(
                f"run directory {str(run_dir)!r} already holds a run: pass --resume "
                "(Python: resume=True) to continue it, --overwrite (overwrite=True) to start over, "
                "or --set name=OTHER"
            )
        if dist.is_main:
            shutil.rmtree(run_dir)
    barrier(dist)
    return resume


def train(cfg: Config, *, resume: Resume = False, overwrite: bool = False,
          max_steps: int | None = None, teacher_record: dict[str, Any] | None = None,
          threads_share: int | None = None, allow_changes: Sequence[str] = ()) -> TrainSummary:
    """Train the run ``cfg`` describes. Sets torch's thread count for this process
    (``training/threads.py``).

    ``resume``: ``True`` continues the run from its checkpoint, ``"auto"`` does when there is
    one (``training/resume.py``). ``teacher_record``: the teacher's test record when the caller
    has already evaluated it (an ablation's cells share one), so that it is not evaluated again.
    ``threads_share``: the threads a caller that divides the CPUs between processes gives this
    one (``ablate --jobs``); ``train.threads``, ``OMP_NUM_THREADS`` and a resumed run's own count
    come first.

    ``resume`` refuses a config that differs from the run's own in keys not in
    ``allow_changes`` (``["train.epochs"]`` extends a run).

    Under torchrun every process calls this; each checks the run directory, rank 0 alone
    removes an overwritten one.
    """
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device)
    device = local_device(device, dist)
    resume = prepare_run_dir(cfg, *after_restart(resume, overwrite, dist), dist)
    start = read_resume_point(cfg.run_dir, device, dist) if resume else None
    if start is not None:
        changed = check_resume_config(start.state["config"], cfg, allow_changes)
        if changed:
            log.warning("resuming %s with changed %s", cfg.run_dir, ", ".join(changed))
    ensure_teacher(cfg)
    # after the teacher's run, which chose its own; a resumed run keeps the count it trained with
    set_threads(cfg.train.threads, start.state.get("threads") if start else None, threads_share)
    if not dist.is_main:  # rank 0 decodes and caches the data first, the others then read it
        barrier(dist)
    train_set, val_set, test_set = build_run_datasets(cfg, device)
    if dist.is_main:
        barrier(dist)
    torch.manual_seed(cfg.train.seed)  # the same initial weights in every process and rerun
    # the teacher is evaluated and recorded by one process
    method = build_method(cfg, train_set, test_set if dist.is_main else None,
                          teacher_record if dist.is_main else None)
    trainer = Trainer(cfg, method, train_set, test_set, device=device, dist=dist,
                      val_set=val_set, teacher_spent_s=teacher_spent_seconds(cfg))
    if start is not None:
        checked_weights(method.student, start.state["model"], str(start.path))
        trainer.load_state_dict(start.state)
        log.info("resumed %s at epoch %d step %d", cfg.run_dir, trainer.epoch + 1, trainer.step)
    summary = trainer.fit(max_steps=max_steps)
    empty_cache()  # the neuron kernels' pooled buffers are sized for this run's model
    # rank 0 writes the last checkpoint; no process may read the run (a teacher trained first, say)
    # before it is there
    barrier(dist)
    return replace(summary, run_dir=str(cfg.run_dir), teacher_top1=recorded_teacher_top1(cfg.run_dir))


# --------------------------------------------------------------------------------------------
# Runs that are trained once
# --------------------------------------------------------------------------------------------


def check_same_config(cfg: Config) -> None:
    """A run directory that already holds a run must hold a run of ``cfg``: reusing or resuming
    a run of another config would mix results silently."""
    path = cfg.run_dir / "config.toml"
    if not path.is_file():
        return
    differ = config_differences(read_toml(path), cfg)
    if differ:
        raise SpikeguideError(
            f"{str(cfg.run_dir)!r} holds a run of another config (it differs in "
            f"{', '.join(differ[:5])}{', ...' if len(differ) > 5 else ''}): train this one "
            "elsewhere with --set name=OTHER (a teacher: teacher.checkpoint=DIR), or delete that "
            "folder if its run is no longer wanted"
        )


def is_finished(cfg: Config) -> bool:
    latest = cfg.run_dir / LATEST
    try:  # memory-mapped: reads the epoch, not the weights
        if not latest.is_file():
            return False
        state = load_checkpoint(latest, mmap=True)
    except UnreadableCheckpoint:  # training resumes from previous.pt
        return False
    # a budgeted run's planned epochs are in its checkpoint
    return state["epoch"] >= (state.get("epochs") or cfg.train.epochs)


def ensure_trained(cfg: Config, **train_options: Any) -> bool:
    """Train the run ``cfg`` describes (``train_options`` go to :func:`train`) unless it is
    finished in its run directory; an interrupted run is resumed. Returns whether anything was
    trained; raises :class:`TrainingStopped` when a signal stops the training."""
    # under torchrun every process decides alone: all must look before rank 0 starts writing
    barrier_if_joined()
    check_same_config(cfg)
    if is_finished(cfg):
        return False
    stopped = train(cfg, resume=has_checkpoint(cfg.run_dir), **train_options).stopped
    if stopped is not None:
        raise TrainingStopped(
            f"training {str(cfg.run_dir)!r} stopped on signal {stopped.signal} at epoch "
            f"{stopped.epoch + 1} step {stopped.step}, its checkpoint written; run the same "
            "command again to resume it", stopped.signal)
    return True


def uses_teacher(cfg: Config) -> bool:
    """Whether the run needs its teacher: to distil from, or to initialise the student."""
    method_cls = METHODS.get(cfg.method.name)
    return method_cls.teacher_needed(cfg.method.options) or cfg.teacher.init_student


def ensure_teacher(cfg: Config) -> None:
    """Train the teacher recipe ``cfg`` names first, when the run uses its teacher and the recipe
    is not trained yet."""
    tcfg = teacher_config(cfg) if uses_teacher(cfg) else None
    if tcfg is None:
        return
    for key, value in followed_data(cfg).items():
        log.warning("teacher %s: data.%s = %r follows the student (teacher.set.data.%s chooses "
                    "otherwise)", cfg.teacher.recipe, key, value, key)
    if not is_finished(tcfg):
        log.warning("training the teacher recipe %s into %s first%s", cfg.teacher.recipe,
                    tcfg.run_dir, "" if tcfg.run_dir.exists() else
                    " (teacher.checkpoint does not exist yet)" if cfg.teacher.checkpoint else "")
    if ensure_trained(tcfg):
        log.info("trained the teacher recipe %s into %s", cfg.teacher.recipe, tcfg.run_dir)
