"""Section 6: real training on the CIFAR-10 JPEG copy, time-boxed by the check itself.

The ANN teacher is ``recipes/ann_resnet20_cifar10.toml`` and the EnOF student (LAF + RepAct)
``recipes/enof_resnet20_cifar10.toml``, both trained through the public training API with the
recipes' settings (the student from scratch, neurons on the ``auto`` backend) except: the data
(the JPEG copy, CIFAR-10 statistics), T = 2 for the student (the recipe has 4), the width in the
smoke run, the number of epochs, and the student's teacher (the run just trained). The epochs are
as many as fit the time left: a few training steps are timed first, an epoch's time is estimated
from them (plus the test evaluation, a forward pass over the test split), and the schedule
(cosine) is set for that many epochs. Should the estimate be short, a SIGTERM at the deadline
makes the Trainer finish its step, write its checkpoint and stop, and the last finished epoch is
reported. What a run did is read from its ``metrics.jsonl`` (one JSON line per finished epoch),
the file every run directory holds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from common import sync
from spikeguide.config import Config, merge, parse_config, read_toml
from spikeguide.training.build import build_datasets
from spikeguide.training.run import build_method, train
from spikeguide.training.trainer import Trainer

from .context import Context
from .pipeline import data_section
from .results import SectionResult
from .timebox import TimeBox

TEACHER_RECIPE = "recipes/ann_resnet20_cifar10.toml"
STUDENT_RECIPE = "recipes/enof_resnet20_cifar10.toml"
TEACHER_RUN, STUDENT_RUN = "gpu_ann", "gpu_enof"
# copied into --out
METRICS_FILES = tuple(f"{name}_metrics.jsonl" for name in (TEACHER_RUN, STUDENT_RUN))
STUDENT_T = 2
TEACHER_SHARE = 0.35  # of the section's time; the student's steps cost several times the ANN's
PROBE_STEPS = 5
MARGIN = 1.15  # on the estimated epoch time: logging, checkpoints, the loader


def recipe_config(ctx: Context, recipe: str, name: str, epochs: int, T: int | None = None,
                  teacher_dir: str | None = None) -> Config:
    """``recipe`` with the check's data, width and epochs; ``teacher_dir``: the teacher run."""
    override: dict[str, Any] = {
        "name": name, "out_dir": str(ctx.work / "runs"), "data": data_section(ctx),
        "model": {"width": ctx.sizes.train_width},
        "train": {"epochs": epochs, "progress": False, "device": str(ctx.device)}}
    if T is not None:
        override["model"]["T"] = T
    cfg = parse_config(merge(read_toml(ctx.script.parent.parent / recipe), override))
    if teacher_dir is not None:  # the teacher is the run trained just before, not its recipe
        cfg.teacher.recipe, cfg.teacher.checkpoint = None, teacher_dir
    return cfg


def step_seconds(cfg: Config, ctx: Context) -> tuple[float, int, int]:
    """(seconds of one training step, steps per epoch, test images), timed on real batches."""
    train_set, test_set = build_datasets(cfg)
    trainer = Trainer(cfg, build_method(cfg, train_set), train_set, test_set, device=ctx.device)
    times = []
    # the first step compiles kernels and grows the allocator
    for step, (x, y) in zip(range(PROBE_STEPS + 1), trainer.train_loader):
        sync(ctx.device)
        start = time.perf_counter()
        loss, _ = trainer.method(trainer.augment(x, torch.Generator().manual_seed(step)), y)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        sync(ctx.device)
        times.append(time.perf_counter() - start)
    return min(times[1:] or times), len(trainer.train_loader), len(test_set)


def epoch_seconds(step_s: float, steps: int, test_images: int, batch: int) -> float:
    evaluation = test_images / batch * step_s / 3  # a forward pass is about a third of a step
    return (steps * step_s + evaluation) * MARGIN


def epoch_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextmanager
def stop_at(seconds: float) -> Iterator[None]:
    """SIGTERM to this process after ``seconds``: inside ``Trainer.fit`` it stops the training
    with a checkpoint; anywhere else it is ignored."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    timer = threading.Timer(max(seconds, 0.0), os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)


def train_boxed(ctx: Context, result: SectionResult, label: str, seconds: float,
                recipe: str, name: str, **options: Any) -> dict[str, Any] | None:
    """Train ``recipe`` (``options`` go to :func:`recipe_config`) for as many epochs as fit
    ``seconds``; what it did, or None when not one epoch fits."""
    start = time.monotonic()
    probe = recipe_config(ctx, recipe, name, 1, **options)
    step_s, steps, test_images = step_seconds(probe, ctx)
    batch = probe.data.batch_size
    epoch_s = epoch_seconds(step_s, steps, test_images, batch)
    left = seconds - (time.monotonic() - start)
    epochs = min(ctx.sizes.max_epochs, math.floor(left / epoch_s))
    result.note(f"{label}: a step takes {step_s * 1e3:.1f} ms ({batch / step_s:,.0f} img/s), an "
                f"epoch about {epoch_s:.1f} s; {left:.0f} s left: {epochs} epoch(s)")
    if epochs < 1:
        result.skip(f"{label}: not one epoch fits")
        return None
    cfg = recipe_config(ctx, recipe, name, epochs, **options)
    with stop_at(left):
        train(cfg, overwrite=True)
    metrics = epoch_lines(cfg.run_dir)
    if metrics:
        shutil.copy(cfg.run_dir / "metrics.jsonl", ctx.out / f"{name}_metrics.jsonl")
    return {"label": label, "run_dir": str(cfg.run_dir), "spiking": cfg.method.name != "ann",
            "epochs_planned": epochs, "step_img_s": batch / step_s,
            "train_images": steps * batch, "test_images": test_images, "metrics": metrics}


def run(ctx: Context, box: TimeBox, result: SectionResult) -> None:
    teacher = train_boxed(ctx, result, "ANN teacher, resnet20", TEACHER_SHARE * box.left(),
                          TEACHER_RECIPE, TEACHER_RUN)
    runs = [teacher]
    if teacher is not None and teacher["metrics"]:
        student = f"EnOF student (LAF + RepAct), resnet20 T={STUDENT_T}"
        runs.append(train_boxed(ctx, result, student, box.left(), STUDENT_RECIPE, STUDENT_RUN,
                                T=STUDENT_T, teacher_dir=teacher["run_dir"]))
    runs = [r for r in runs if r is not None]
    test_images = f"{runs[0]['test_images']:,}" if runs else "-"
    table = result.table(f"Training on the CIFAR-10 JPEG copy (test split: {test_images} images)",
                         ["run", "epochs", "test top1 %", "best top1 %", "firing rate",
                          "s/epoch (test included)", "img/s (steps)", "img/s (whole epochs)"])
    result.data["runs"] = []
    for done in runs:
        metrics = done["metrics"]
        if len(metrics) < done["epochs_planned"]:
            result.note(f"{done['label']}: stopped at the deadline during epoch "
                        f"{len(metrics) + 1} of {done['epochs_planned']}")
        result.data["runs"].append(done)
        if not metrics:
            continue
        last = metrics[-1]
        per_epoch = last["elapsed_s"] / len(metrics)
        table.add(done["label"], len(metrics), last["test_top1"],
                  max(m["test_top1"] for m in metrics),
                  last["test_firing_rate"] if done["spiking"] else None, per_epoch,
                  done["step_img_s"], done["train_images"] / per_epoch)
