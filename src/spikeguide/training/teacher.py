"""The ANN teacher of a student run: where it is, loaded frozen and checked, evaluated once.

A student names its teacher with ``teacher.checkpoint`` (a run directory or checkpoint file),
``teacher.recipe`` (the teacher's TOML recipe), or both:

* checkpoint only: that checkpoint; it must exist.
* recipe only: the recipe's own run directory (its ``out_dir/name``), trained there first
  unless a finished run of that same config is already there (an interrupted one is resumed).
* both: the recipe, trained the same way into the run directory ``teacher.checkpoint``.

From a run directory the student takes ``best.pt`` where the teacher held out a validation split,
else ``latest.pt`` (:func:`teacher_weights`).

With ``teacher.budget_share``, the recipe trains within that share of the student's
``train.time_budget`` (training/budget.py).

Training the recipe is the runner's job (:func:`spikeguide.training.run.ensure_teacher`); this
module only says where the teacher is, loads and checks it, and evaluates it. The checks come
before any training: the teacher's input shape (channels and size) must be the student's, and
every layer the two share must have the same shape (classes, widths, the features LAF and hybrid
distil). Paths are relative
to the working directory, like every path in a recipe. The teacher must be the student's ANN twin
(same model, output feature size and class count). It is evaluated once on the student's test
split; the result goes to ``teacher.json`` in the student's run directory and into the run's
summary as ``teacher_top1``.

A teacher recipe is trained on the student's data: the student's ``data.root``,
``data.train_subset`` and ``data.test_subset`` replace the recipe's when both use the same dataset
(logged). ``teacher.set`` overrides the recipe like ``--set`` (``--set
teacher.set.train.epochs=1``) and comes last.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from ..config import Config, DataConfig, merge, parse_config, read_toml
from ..data import Dataset
from ..data.loader import normalized_batches
from ..errors import SpikeguideError
from ..models import SpikingNet
from .budget import teacher_seconds
from .build import load_model
from .checkpoint import find_checkpoint, load_checkpoint
from .distributed import resolve_device
from .runlog import read_metrics
from .scoring import score_model

log = logging.getLogger("spikeguide")

TEACHER_FILE = "teacher.json"


# what a teacher recipe takes from its student by default, when both use the same dataset
# val_split and val_seed too: a teacher trained on the student's validation images would leak
# them into every choice made on that split
FOLLOWED_DATA = ("root", "train_subset", "test_subset", "val_split", "val_seed")


def read_teacher_recipe(cfg: Config) -> dict:
    path = cfg.teacher.recipe
    if not Path(path).is_file():
        raise SpikeguideError(f"teacher.recipe {path!r} does not exist{relative_note(path)}")
    return read_toml(path)


def followed_data(cfg: Config) -> dict[str, Any]:
    """The ``data`` fields of the student that its teacher recipe takes instead of its own (its
    data folder, subsets and validation split, when both use the same dataset and
    ``teacher.set`` does not choose them): the teacher is trained on the student's data. None:
    the field is unset."""
    raw = read_teacher_recipe(cfg).get("data", {})
    if raw.get("name", DataConfig.name) != cfg.data.name:
        return {}
    chosen = cfg.teacher.set.get("data", {})
    return {key: getattr(cfg.data, key) for key in FOLLOWED_DATA
            if key not in chosen
            and raw.get(key, getattr(DataConfig, key, None)) != getattr(cfg.data, key)}


def teacher_config(cfg: Config) -> Config | None:
    """The teacher's recipe as a config placed where the student looks for it (None: no recipe):
    the recipe, then the student's data it follows (:func:`followed_data`), then
    ``teacher.set``."""
    t = cfg.teacher
    if t.recipe is None:
        return None
    raw = read_teacher_recipe(cfg)
    data = dict(raw.get("data", {}))
    for key, value in followed_data(cfg).items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    try:
        tcfg = parse_config(merge(raw, {"data": data}, t.set))
    except SpikeguideError as e:
        raise SpikeguideError(f"teacher recipe {t.recipe!r} with teacher.set: {e}") from None
    if t.budget_share is not None:  # the teacher trains in its share of the student's budget
        tcfg.train.time_budget = teacher_seconds(cfg)
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
    """The teacher's checkpoint or run directory (its recipe's run directory when it has one)."""
    tcfg = teacher_config(cfg)
    if tcfg is not None:
        return str(tcfg.run_dir)
    if cfg.teacher.checkpoint is None:
        raise SpikeguideError(
            f"method {cfg.method.name!r} needs a teacher: set teacher.checkpoint to an ANN run "
            "directory or checkpoint, or teacher.recipe to the ANN recipe to train first"
        )
    if not Path(cfg.teacher.checkpoint).exists():
        raise SpikeguideError(f"teacher.checkpoint {cfg.teacher.checkpoint!r} does not exist"
                              f"{relative_note(cfg.teacher.checkpoint)}")
    return cfg.teacher.checkpoint


def relative_note(path: str) -> str:
    return ("" if Path(path).is_absolute() else
            f" (relative paths in a recipe are relative to the working directory, "
            f"{str(Path.cwd())!r})")


def teacher_weights(source: str) -> str:
    """The checkpoint a teacher run directory gives its student: ``best.pt`` where the run chose
    its best epoch on a validation split, else ``latest.pt``, its last epoch. Without a
    validation split the best epoch was chosen on the test split, the split the student is
    scored on. A checkpoint file is taken as named."""
    path = Path(source)
    if not path.is_dir():
        return source
    latest = find_checkpoint(path, "latest")
    held_out = load_checkpoint(latest, mmap=True)["config"]["data"].get("val_split")
    return str(find_checkpoint(path, "best") if held_out else latest)


def load_teacher(cfg: Config, student: SpikingNet,
                 frame_shape: Sequence[int] | None = None) -> tuple[SpikingNet, str]:
    """The ANN twin of ``student`` that ``cfg`` names, and where it came from; ``frame_shape``:
    the ``[C, H, W]`` of the student's input, which the teacher must have been trained on."""
    source = teacher_source(cfg)
    teacher, tcfg, ckpt = load_model(teacher_weights(source))
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
    trained_on = ckpt["data"].get("frame_shape")  # absent in checkpoints of older versions
    if frame_shape is not None and trained_on is not None and list(trained_on) != list(frame_shape):
        raise SpikeguideError(
            f"teacher {source!r} was trained on inputs of shape {list(trained_on)} (C, H, W); "
            f"the student's data ({cfg.data.name}) has {list(frame_shape)}: train the teacher on "
            "the student's data"
        )
    student_shapes = {k: v.shape for k, v in student.state_dict().items()}
    for key, value in teacher.state_dict().items():
        if key in student_shapes and value.shape != student_shapes[key]:
            raise SpikeguideError(
                f"teacher {source!r} has {key} of shape {list(value.shape)}, the student "
                f"{list(student_shapes[key])}: the teacher must be the student's ANN twin (same "
                "model, width and model.options)"
            )
    return teacher, source


def score_teacher(cfg: Config, teacher: SpikingNet, source: str,
                  test_set: Dataset) -> dict[str, Any]:
    """The teacher's record on the student's test split (what ``teacher.json`` holds)."""
    device = resolve_device(cfg.train.device)
    scores = score_model(teacher.to(device),
                         normalized_batches(test_set, cfg.data.eval_batch_size, device))
    log.info("teacher %s: test top1 %.2f", source, scores.top1)
    return {"checkpoint": source, "top1": scores.top1, "top5": scores.top5, "loss": scores.loss}


def prepare_teacher(cfg: Config, student: SpikingNet, test_set: Dataset | None = None,
                    record: dict[str, Any] | None = None,
                    frame_shape: Sequence[int] | None = None) -> SpikingNet:
    """Load the teacher ``cfg`` names and check it fits the student and its input
    (``frame_shape``); its test record (``record``, or evaluated on ``test_set``) goes to the
    student's run directory."""
    teacher, source = load_teacher(cfg, student, frame_shape)
    if record is None and test_set is not None:
        record = score_teacher(cfg, teacher, source, test_set)
    if record is not None:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        (cfg.run_dir / TEACHER_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return teacher


def teacher_spent_seconds(cfg: Config) -> float | None:
    """The seconds the teacher recipe's run recorded (``elapsed_s`` of its last epoch) when it
    trains in a share of the student's budget; None otherwise, or before its first epoch."""
    if cfg.teacher.budget_share is None or cfg.teacher.recipe is None:
        return None
    records = read_metrics(teacher_config(cfg).run_dir)
    return records[-1].elapsed_s if records else None


def recorded_teacher_top1(run_dir: str | Path) -> float | None:
    """The teacher's test top-1 recorded in a run directory (None: the run has no teacher)."""
    path = Path(run_dir) / TEACHER_FILE
    return json.loads(path.read_text())["top1"] if path.is_file() else None
