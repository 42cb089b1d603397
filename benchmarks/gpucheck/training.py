"""Section 6: a paper row trained end to end, teacher then student, within the section's time.

The row is ``recipes/fast/enof_resnet20_cifar10_t4.toml`` (EnOF resnet20, T = 4, CIFAR-10;
the paper reports 94.74 %): one :func:`spikeguide.train` call trains its ANN teacher recipe
first, in the recipe's ``teacher.budget_share`` of the time, then the student in the rest. The
time is the section's: ``train.time_budget`` is set to what the section has left (less a
reserve for loading the data and scoring the teacher), and the runs plan their epochs from their
first timed steps (``spikeguide/training/budget.py``), stopping at the deadline with a
checkpoint should the estimate run short. If time is left after it, the second row,
``recipes/fast/enof_resnet19_cifar10_t1.toml`` (95.37 %), trains the same way.

Everything else is the recipes' own, except: the data (the CIFAR-10 JPEG copy, with CIFAR-10
statistics; the paper's figures are on the original images), the run folders, and in the smoke
run the width, the batch, one epoch at most and float32 (the CPU stands in for a GPU).
What each run did is read from its ``metrics.jsonl`` and its checkpoint's plan.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from spikeguide.config import Config, dump_toml, merge, parse_config, read_toml
from spikeguide.training.budget import teacher_seconds
from spikeguide.training.checkpoint import load_checkpoint
from spikeguide.training.run import train

from .context import Context
from .pipeline import data_section
from .results import SectionResult
from .timebox import TimeBox

# (recipe, its teacher's run name, the student's run name, the published top-1)
ROWS = (("recipes/fast/enof_resnet20_cifar10_t4.toml", "fast_ann_resnet20", "fast_enof_resnet20_t4",
         94.74),
        ("recipes/fast/enof_resnet19_cifar10_t1.toml", "fast_ann_resnet19", "fast_enof_resnet19_t1",
         95.37))
# copied into --out
METRICS_FILES = tuple(f"{name}_metrics.jsonl" for _, teacher, student, _ in ROWS
                      for name in (teacher, student))
SETUP_S = 30.0  # of a row's time, kept for loading the data, building models, scoring the teacher
MIN_ROW_S = 120.0  # a further row starts only with this much left


def overrides(ctx: Context, name: str, recipe_data: dict[str, Any]) -> dict[str, Any]:
    """What the check changes in a recipe: the data, the run folder, and the smoke run's sizes."""
    data = data_section(ctx)
    if not ctx.smoke:  # the recipe's batch sizes
        data.update(batch_size=recipe_data["batch_size"],
                    eval_batch_size=recipe_data.get("eval_batch_size", data["eval_batch_size"]))
    table: dict[str, Any] = {"name": name, "out_dir": str(ctx.work / "runs"), "data": data,
                             "train": {"device": str(ctx.device), "progress": False}}
    if ctx.smoke:
        table["model"] = {"width": ctx.sizes.train_width}
        table["train"].update(epochs=ctx.sizes.max_epochs, amp="none")
    return table


def row_configs(ctx: Context, recipe: str, teacher_name: str, student_name: str,
                seconds: float) -> tuple[Config, Config]:
    """The student's config, its teacher recipe rewritten beside the runs, and the teacher's."""
    root = ctx.script.parent.parent
    raw = read_toml(root / recipe)
    traw = read_toml(root / raw["teacher"]["recipe"])
    teacher = parse_config(merge(traw, overrides(ctx, teacher_name, traw["data"])))
    teacher_recipe = ctx.work / f"{teacher_name}.toml"
    teacher_recipe.write_text(dump_toml(teacher))
    student = merge(raw, overrides(ctx, student_name, raw["data"]),
                    {"train": {"time_budget": seconds},
                     "teacher": {"recipe": str(teacher_recipe)}})
    return parse_config(student), teacher


def epoch_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_record(ctx: Context, cfg: Config, label: str, budget_s: float) -> dict[str, Any]:
    """What a run did in its ``budget_s``: its planned epochs, its epoch lines (copied into
    --out)."""
    metrics = epoch_lines(cfg.run_dir)
    if metrics:
        (ctx.out / f"{cfg.name}_metrics.jsonl").write_text(
            (cfg.run_dir / "metrics.jsonl").read_text())
    latest = cfg.run_dir / "latest.pt"
    planned = load_checkpoint(latest, mmap=True).get("epochs") if latest.is_file() else None
    return {"label": label, "run_dir": str(cfg.run_dir), "spiking": cfg.method.name != "ann",
            "budget_s": budget_s, "epochs_planned": planned, "metrics": metrics}


def train_row(ctx: Context, result: SectionResult, recipe: str, teacher_name: str,
              student_name: str, seconds: float) -> list[dict[str, Any]]:
    """Teacher and student of one fast recipe within ``seconds``, by ``train.time_budget``."""
    student, teacher = row_configs(ctx, recipe, teacher_name, student_name,
                                   max(1.0, seconds - SETUP_S))
    result.note(f"{recipe}: train.time_budget {student.train.time_budget:.0f} s, of which "
                f"{student.teacher.budget_share:.0%} for the teacher")
    shutil.rmtree(teacher.run_dir, ignore_errors=True)  # a run of an earlier check's budget
    start = time.monotonic()
    train(student, overwrite=True)
    wall = time.monotonic() - start
    model = f"{student.model.name} T={student.model.T}"
    teacher_s = teacher_seconds(student)
    runs = [run_record(ctx, teacher, f"ANN teacher, {student.model.name}", teacher_s),
            run_record(ctx, student, f"EnOF student, {model}",
                       student.train.time_budget - teacher_s)]
    runs[1]["wall_s"] = wall
    return runs


def run(ctx: Context, box: TimeBox, result: SectionResult) -> None:
    rows = ROWS[:1] if ctx.smoke else ROWS
    runs: list[dict[str, Any]] = []
    table = result.table("Fast recipes on the CIFAR-10 JPEG copy, teacher then student "
                         "(test split: 10,000 images; smoke: the generated tree)",
                         ["run", "epochs (planned)", "test top1 %", "paper top1 %",
                          "train s (log)", "row wall s (teacher included)"])
    for i, (recipe, teacher_name, student_name, paper) in enumerate(rows):
        if i > 0 and box.left() < MIN_ROW_S:
            result.skip(f"{recipe} (needs at least {MIN_ROW_S:.0f} s, {box.left():.0f} s left)")
            break
        row = train_row(ctx, result, recipe, teacher_name, student_name, box.left())
        for done in row:
            metrics = done["metrics"]
            last = metrics[-1] if metrics else {}
            table.add(done["label"], f"{len(metrics)} ({done['epochs_planned']})",
                      last.get("test_top1"), f"{paper:.2f}" if done["spiking"] else None,
                      last.get("elapsed_s"), done.get("wall_s"))
            if done["epochs_planned"] is not None and len(metrics) < done["epochs_planned"]:
                result.note(f"{done['label']}: {len(metrics)} of {done['epochs_planned']} planned "
                            "epochs finished")
        runs += row
    result.data["runs"] = runs
