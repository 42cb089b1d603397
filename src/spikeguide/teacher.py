"""The ANN teacher of a student run: found or trained first, loaded frozen, evaluated once.

A student names its teacher with ``teacher.checkpoint`` (a run directory or checkpoint file),
``teacher.recipe`` (the teacher's TOML recipe), or both:

* checkpoint only: that checkpoint; it must exist.
* recipe only: the recipe's own run directory (its ``out_dir/name``), trained there first
  unless a finished run of that same config is already there (an interrupted one is resumed).
* both: the recipe, trained the same way into the run directory ``teacher.checkpoint``.

Paths are relative to the working directory, like every path in a recipe. The teacher must be
the student's ANN twin (same model, output feature size and class count). It is evaluated once on
the student's test split; the result goes to ``teacher.json`` in the student's run directory and
into the run's summary as ``teacher_top1``.

:func:`ensure_trained` (train a config unless its run directory holds it finished) also serves
``spikeguide ablate``, whose cells are runs of this kind.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint
from .config import Config, load_config, parse_config, read_toml, to_dict
from .data import ArrayDataset
from .distributed import barrier_if_joined
from .errors import SpikeguideError, TrainingStopped
from .metrics import evaluate, normalized_batches
from .models import SpikingNet
from .train import resolve_device

log = logging.getLogger("spikeguide")

TEACHER_FILE = "teacher.json"


# --------------------------------------------------------------------------------------------
# Runs that are trained once
# --------------------------------------------------------------------------------------------


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_same_config(cfg: Config) -> None:
    """A run directory that already holds a run must hold a run of ``cfg``: reusing or resuming
    a run of another config would mix results silently."""
    path = cfg.run_dir / "config.toml"
    if not path.is_file():
        return
    # both resolved, so a field added to the config since that run compares by its default
    stored, wanted = (flatten(to_dict(c)) for c in (parse_config(read_toml(path)), cfg))
    differ = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))
    if differ:
        raise SpikeguideError(
            f"{str(cfg.run_dir)!r} holds a run of another config (it differs in "
            f"{', '.join(differ[:5])}); delete that folder to train it again, or choose another "
            "output folder"
        )


def is_finished(cfg: Config) -> bool:
    latest = cfg.run_dir / "latest.pt"
    # memory-mapped: reads the epoch, not the weights
    return latest.is_file() and load_checkpoint(latest, mmap=True)["epoch"] >= cfg.train.epochs


def ensure_trained(cfg: Config, **train_options: Any) -> bool:
    """Train the run ``cfg`` describes (``train_options`` go to :func:`spikeguide.runner.train`)
    unless it is finished in its run directory; an interrupted run is resumed. Returns whether
    anything was trained; raises :class:`TrainingStopped` when a signal stops the training."""
    from .runner import train  # runner imports this module

    # under torchrun every process decides alone: all must look before rank 0 starts writing
    barrier_if_joined()
    check_same_config(cfg)
    if is_finished(cfg):
        return False
    summary = train(cfg, resume=(cfg.run_dir / "latest.pt").is_file(), **train_options)
    if summary["stopped"]:
        raise TrainingStopped(
            f"training {str(cfg.run_dir)!r} stopped on signal {summary['signal']} at epoch "
            f"{summary['epoch'] + 1} step {summary['step']}, its checkpoint written; run the same "
            "command again to resume it", summary["signal"])
    return True


# --------------------------------------------------------------------------------------------
# The teacher
# --------------------------------------------------------------------------------------------


def teacher_config(cfg: Config) -> Config | None:
    """The teacher's recipe as a config placed where the student looks for it (None: no recipe)."""
    t = cfg.teacher
    if t.recipe is None:
        return None
    tcfg = load_config(t.recipe)
    if t.checkpoint is not None:
        path = Path(t.checkpoint)
        if path.suffix == ".pt":
            raise SpikeguideError(
                f"teacher.checkpoint {t.checkpoint!r} names a file, but teacher.recipe is set too: "
                "name the run directory the recipe is trained into instead"
            )
        tcfg.out_dir, tcfg.name = str(path.parent), path.name
    return tcfg


def teacher_source(cfg: Config) -> str:
    """The teacher's checkpoint or run directory, after training its recipe when needed."""
    tcfg = teacher_config(cfg)
    if tcfg is not None:
        if ensure_trained(tcfg):
            log.info("trained the teacher recipe %s into %s", cfg.teacher.recipe, tcfg.run_dir)
        return str(tcfg.run_dir)
    if cfg.teacher.checkpoint is None:
        raise SpikeguideError(
            f"method {cfg.method.name!r} needs a teacher: set teacher.checkpoint to an ANN run "
            "directory or checkpoint, or teacher.recipe to the ANN recipe to train first"
        )
    return cfg.teacher.checkpoint


def load_teacher(cfg: Config, student: SpikingNet) -> tuple[SpikingNet, str]:
    """The ANN twin of ``student`` that ``cfg`` names, and where it came from."""
    from .runner import load_model  # runner imports this module

    source = teacher_source(cfg)
    teacher, tcfg, _ = load_model(source)
    if teacher.spiking:
        raise SpikeguideError(f"teacher {source!r} is a spiking model; the teacher must be an "
                              "ANN (method 'ann')")
    shape, wanted = teacher.classifier.weight.shape, student.classifier.weight.shape
    if tcfg.model.name != cfg.model.name or shape != wanted:
        raise SpikeguideError(
            f"teacher {source!r} is a {tcfg.model.name} with {shape[1]} output features and "
            f"{shape[0]} classes; the student is a {cfg.model.name} with {wanted[1]} and "
            f"{wanted[0]}: the teacher must be the student's ANN twin (same model and width)"
        )
    return teacher, source


def evaluate_teacher(cfg: Config, teacher: SpikingNet, source: str,
                     test_set: ArrayDataset) -> dict[str, Any]:
    """The teacher's record on the student's test split."""
    device = resolve_device(cfg.train.device)
    result = evaluate(teacher.to(device),
                      normalized_batches(test_set, cfg.data.eval_batch_size, device))
    log.info("teacher %s: test top1 %.2f", source, result["top1"])
    return {"checkpoint": source, **{k: result[k] for k in ("top1", "top5", "loss")}}


def prepare_teacher(cfg: Config, student: SpikingNet, test_set: ArrayDataset | None = None,
                    record: dict[str, Any] | None = None) -> SpikingNet:
    """Load the teacher ``cfg`` names (training its recipe first when needed); its test record
    (``record``, or evaluated on ``test_set``) goes to the student's run directory."""
    teacher, source = load_teacher(cfg, student)
    if record is None and test_set is not None:
        record = evaluate_teacher(cfg, teacher, source, test_set)
    if record is not None:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        (cfg.run_dir / TEACHER_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return teacher


def teacher_summary(run_dir: str | Path) -> dict[str, float]:
    """``{"teacher_top1": ...}`` for a run that recorded its teacher, else ``{}``."""
    path = Path(run_dir) / TEACHER_FILE
    return {"teacher_top1": json.loads(path.read_text())["top1"]} if path.is_file() else {}
