"""``spikeguide ablate``: the EnOF ablation, every variant at every T, with one shared teacher.

The variants are the baseline (``enof`` with ``laf = false``, no RepAct), +LAF, +RepAct
(``model.repact``), +LAF+RepAct, and vanilla KD (``kd``; by default with ``tau = laf_tau`` and
``alpha = laf_lambda``, so that it differs from +LAF only in what is distilled: logits instead of
features through the teacher's classifier; ``kd_tau`` / ``kd_alpha`` give it settings of its own,
tuned for it as LAF's are for LAF). Everything else comes from the recipe.

Cells are ordinary runs in ``OUT/<variant>_T<T>_s<seed>/``, one per variant, T and seed (the
seeds default to the recipe's ``train.seed``); a finished cell is skipped on a rerun and an
interrupted one resumed (a cell folder holding a run of another config is an error, never
silently reused). The teacher is trained (if needed) and evaluated once per ablation, not once
per cell. After every cell the tables ``OUT/ablation.md`` and ``OUT/ablation.csv`` are
rewritten: the markdown gives, per variant and T, the mean +- standard deviation of the final
test top-1 over the seeds with the per-seed values (and of the final validation top-1 where the
recipe holds out ``data.val_split``), the differences between variants with a paired t-test over
the seeds (:mod:`spikeguide.analysis.paired`; seeds pair because a seed fixes the initial
weights and the data order), and every cell's best and final top-1, firing rate of the spiking
layers at the end (RepAct's ReLU is not a spiking layer) and training wall time from the run's
log. Variants are compared on the validation split where there is one: that is the figure to
choose settings on; on the test split otherwise, which the table then says. The CSV has one row
per cell.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import multiprocessing
import os
import signal
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..analysis.paired import MIN_SEEDS, paired_test
from ..config import Config, apply_overrides, merge, parse_config, read_toml
from ..errors import SpikeguideError, TrainingStopped
from ..training.build import build_test_set, load_model
from ..training.run import ensure_teacher, ensure_trained
from ..training.runlog import read_metrics
from ..training.teacher import score_teacher, teacher_source, teacher_weights
from ..training.threads import choose_threads


@dataclass(frozen=True)
class Variant:
    key: str  # the cell folder's prefix
    label: str  # the table's row name
    method: str
    laf: bool = False
    repact: bool = False

    def method_table(self, settings: DistillSettings) -> dict[str, Any]:
        if self.method == "kd":
            return {"name": "kd", "tau": settings.kd_tau, "alpha": settings.kd_alpha}
        return {"name": "enof", "laf": self.laf, "laf_tau": settings.laf_tau,
                "laf_lambda": settings.laf_lambda}


@dataclass(frozen=True)
class DistillSettings:
    """The distillation losses' temperatures and weights the cells train with."""
    laf_tau: float
    laf_lambda: float
    kd_tau: float
    kd_alpha: float

    @classmethod
    def of(cls, base: Config, kd_tau: float | None = None,
           kd_alpha: float | None = None) -> DistillSettings:
        """The recipe's LAF settings; KD's default to them (KD then differs from +LAF only in
        what it distills)."""
        opts = base.method.options
        settings = cls(opts.laf_tau, opts.laf_lambda,
                       opts.laf_tau if kd_tau is None else kd_tau,
                       opts.laf_lambda if kd_alpha is None else kd_alpha)
        if settings.kd_tau <= 0 or settings.kd_alpha < 0:
            raise SpikeguideError(f"vanilla KD needs a positive temperature and a non-negative "
                                  f"weight; got kd_tau={settings.kd_tau:g}, "
                                  f"kd_alpha={settings.kd_alpha:g}")
        return settings

    def describe(self) -> str:
        return (f"LAF tau {self.laf_tau:g}, lambda {self.laf_lambda:g}; vanilla KD tau "
                f"{self.kd_tau:g}, weight {self.kd_alpha:g}")


VARIANTS = {v.key: v for v in [
    Variant("baseline", "baseline", "enof"),
    Variant("laf", "+LAF", "enof", laf=True),
    Variant("repact", "+RepAct", "enof", repact=True),
    Variant("laf_repact", "+LAF+RepAct", "enof", laf=True, repact=True),
    Variant("kd", "vanilla KD", "kd"),
]}


def base_config(recipe: str | Path, overrides: list[str]) -> tuple[dict, Config]:
    """The recipe (an ``enof`` recipe) with ``overrides`` applied, raw and parsed."""
    raw = apply_overrides(read_toml(recipe), overrides)
    cfg = parse_config(copy.deepcopy(raw))
    if cfg.method.name != "enof":
        raise SpikeguideError(f"ablate takes an 'enof' recipe; {str(recipe)!r} uses method "
                              f"{cfg.method.name!r}")
    return raw, cfg


def cell_config(raw: dict, base: Config, variant: Variant, T: int, seed: int, out: Path,
                teacher: str, settings: DistillSettings | None = None) -> Config:
    settings = settings or DistillSettings.of(base)
    data = merge(raw, {"name": f"{variant.key}_T{T}_s{seed}", "out_dir": str(out),
                       "model": {"T": T, "repact": variant.repact},
                       "train": {"seed": seed},
                       "teacher": {"checkpoint": teacher}})
    data["teacher"].pop("recipe", None)  # the shared teacher is resolved once, up front
    data["method"] = variant.method_table(settings)
    return parse_config(data)


@dataclass(frozen=True)
class CellResult:
    best_top1: float  # on validation where the recipe holds a split out, else on test
    final_top1: float  # test
    final_val_top1: float | None  # None: no validation split
    firing_rate: float  # of the spiking layers, at the end
    wall_s: float  # training seconds from the run's log, every process of a resumed run


def read_cell(run_dir: Path) -> CellResult:
    records = read_metrics(run_dir)
    last = records[-1]
    return CellResult(best_top1=max(r.monitored.top1 for r in records),
                      final_top1=last.test.top1, firing_rate=last.test.firing_rate,
                      wall_s=last.elapsed_s,
                      final_val_top1=None if last.val is None else last.val.top1)


CellKey = tuple[str, int, int]  # (variant key, T, seed)


def spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def summary_cell(values: list[float]) -> str:
    mean, std = spread(values)
    seeds = ", ".join(f"{v:.2f}" for v in values)
    return f"{mean:.2f}" + (f" +- {std:.2f} [{seeds}]" if std is not None else "")


# beside every variant against the baseline: LAF against vanilla KD (the paper's claim, the two
# differing only in what is distilled), RepAct on top of LAF, and the whole method against KD
HEAD_TO_HEAD = [("laf", "kd"), ("laf_repact", "laf"), ("laf_repact", "kd")]


def comparisons(variants: list[Variant]) -> list[tuple[Variant, Variant]]:
    """The pairs of variants the tables compare, of those that ran."""
    keys = {v.key: v for v in variants}
    pairs = [(v, keys["baseline"]) for v in variants if v.key != "baseline" and "baseline" in keys]
    return pairs + [(keys[a], keys[b]) for a, b in HEAD_TO_HEAD if a in keys and b in keys]


def write_tables(out: Path, title: str, teacher: str, teacher_top1: float | None,
                 results: dict[CellKey, CellResult], variants: list[Variant],
                 Ts: list[int], seeds: list[int], settings: DistillSettings) -> None:
    fields = [f.name for f in dataclasses.fields(CellResult)]
    done = [(v, T, s) for v in variants for T in Ts for s in seeds if (v.key, T, s) in results]
    with open(out / "ablation.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "T", "seed"] + fields)
        for v, T, s in done:
            cell = results[v.key, T, s]
            writer.writerow([v.label, T, s] + ["-" if getattr(cell, k) is None else
                                               round(getattr(cell, k), 4) for k in fields])

    def finals(v: Variant, T: int, field: str = "final_top1") -> list[float]:
        return [getattr(results[v.key, T, s], field) for s in seeds if (v.key, T, s) in results]

    def compared(a: Variant, b: Variant, T: int) -> str:
        both = [s for s in seeds if (a.key, T, s) in results and (b.key, T, s) in results]
        if not both:
            return "-"
        return paired_test([getattr(results[a.key, T, s], ranked) for s in both],
                           [getattr(results[b.key, T, s], ranked) for s in both]).describe()

    with_val = any(cell.final_val_top1 is not None for cell in results.values())
    ranked, split = ("final_val_top1", "validation") if with_val else ("final_top1", "test")

    acc = "not recorded" if teacher_top1 is None else f"{teacher_top1:.2f} %"
    header = "| variant | " + " | ".join(f"T={T}" for T in Ts) + " |"
    rule = "|---" * (len(Ts) + 1) + "|"
    lines = [f"# EnOF ablation: {title}", "",
             f"Teacher (ANN twin, shared by every cell): `{teacher}`, test top-1 {acc}.", "",
             f"Distillation settings: {settings.describe()}.", "",
             f"Final test top-1 (%) over seeds {', '.join(map(str, seeds))}: mean +- sample "
             "standard deviation [per-seed values]; cells still to train show fewer seeds.", "",
             header, rule]
    for v in variants:
        lines.append(f"| {v.label} | " + " | ".join(
            summary_cell(finals(v, T)) if finals(v, T) else "not run" for T in Ts) + " |")
    if with_val:
        lines += ["", "Final validation top-1 (%), the figure variants are compared on:", "",
                  header, rule]
        for v in variants:
            lines.append(f"| {v.label} | " + " | ".join(
                summary_cell(finals(v, T, ranked)) if finals(v, T) else "not run" for T in Ts)
                + " |")
    pairs = comparisons(variants)
    if pairs:
        lines += ["", f"Differences in mean final {split} top-1 (percentage points) over the "
                  "seeds both variants ran, paired by seed: the mean difference, its 95 % "
                  f"confidence interval and a paired t-test's p; established where p < 0.05 with "
                  f"at least {MIN_SEEDS} seeds."]
        if not with_val:
            lines += ["", "The recipe holds out no validation split (data.val_split), so these "
                      "compare test figures: report them, but choose no setting on them."]
        lines += ["", header.replace("variant", "comparison"), rule]
        for a, b in pairs:
            lines.append(f"| {a.label} vs {b.label} | "
                         + " | ".join(compared(a, b, T) for T in Ts) + " |")
    best = "best validation / final test" if with_val else "best / final test"
    lines += ["", f"Every cell: {best} top-1 (%), mean firing rate of the spiking layers "
              "at the end, training wall time (s).", "",
              "| variant | T | seed | best / final | firing rate | wall time |", "|---" * 6 + "|"]
    for v, T, s in done:
        c = results[v.key, T, s]
        lines.append(f"| {v.label} | {T} | {s} | {c.best_top1:.2f} / {c.final_top1:.2f} | "
                     f"{c.firing_rate:.4f} | {c.wall_s:.0f} s |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")


def shared_teacher(base: Config, source: str) -> dict[str, Any]:
    """The teacher's test record, evaluated once for every cell of the ablation."""
    teacher, _, _ = load_model(teacher_weights(source))
    return score_teacher(base, teacher, source, build_test_set(base))


def train_cell(cfg: Config, teacher_record: dict[str, Any],
               threads_share: int | None = None) -> tuple[bool, float]:
    """Train (or skip) one cell; returns whether it trained and the seconds it took."""
    start = time.monotonic()
    trained = ensure_trained(cfg, teacher_record=teacher_record, threads_share=threads_share)
    return trained, time.monotonic() - start


# in a jobs > 1 worker: set by the main process once a signal stops the ablation, and the
# worker's share of the threads
_stop_event = None
_threads_share: int | None = None


def init_worker(threads: int, log_level: int, stop_event) -> None:
    """A ``jobs > 1`` worker process: its share of the threads and the command's logging. It
    ignores SIGINT/SIGTERM between cells; while a cell trains, the Trainer's own handlers
    checkpoint and stop it (the main process forwards the signal)."""
    global _stop_event, _threads_share
    _stop_event, _threads_share = stop_event, threads
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(message)s", stream=sys.stderr)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def train_cell_in_worker(cfg: Config, teacher_record: dict[str, Any]) -> tuple[bool, float]:
    # a cell the pool had already queued when the ablation was stopped is not started
    if _stop_event.is_set():
        raise TrainingStopped(f"{str(cfg.run_dir)!r} not started: the ablation was stopped",
                              signal.SIGTERM)
    return train_cell(cfg, teacher_record, _threads_share)


@contextmanager
def forward_signals_to_workers(stop_event) -> Iterator[None]:
    """SIGINT/SIGTERM reach the workers, and the main process stops waiting for more cells."""

    def forward(signum, frame):
        stop_event.set()
        for child in multiprocessing.active_children():
            os.kill(child.pid, signum)
        raise TrainingStopped(f"ablation stopped on signal {signum}; the cells in training wrote "
                              "their checkpoints: run the same command again to resume", signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_ablation(recipe: str | Path, Ts: list[int] | None = None,
                 variants: list[str] | None = None, out: str | Path | None = None,
                 overrides: list[str] | None = None, jobs: int = 1,
                 seeds: list[int] | None = None, kd_tau: float | None = None,
                 kd_alpha: float | None = None,
                 echo: Callable[[str], None] = print) -> Path:
    """Train (or skip, when finished) every cell; returns the folder holding the tables.

    ``Ts`` defaults to the recipe's ``model.T``, ``variants`` to all of :data:`VARIANTS`,
    ``seeds`` to the recipe's ``train.seed``, ``out`` to ``OUT_DIR/NAME_ablation`` of the
    recipe, ``kd_tau`` / ``kd_alpha`` (vanilla KD's) to the recipe's ``laf_tau`` /
    ``laf_lambda``. With ``jobs > 1`` that many worker processes train cells at once (the largest T
    first), sharing the threads :func:`~spikeguide.training.threads.choose_threads` gives this
    process (``train.threads``, when set, is each cell's own); every cell is the same run it
    would be alone (seeded, own folder).
    """
    raw, base = base_config(recipe, list(overrides or []))
    unknown = [k for k in variants or [] if k not in VARIANTS]
    if unknown:
        raise SpikeguideError(f"unknown ablation variant(s) {unknown}; known: "
                              f"{', '.join(VARIANTS)}")
    if jobs < 1:
        raise SpikeguideError(f"jobs must be at least 1, got {jobs}")
    settings = DistillSettings.of(base, kd_tau, kd_alpha)
    chosen = [VARIANTS[k] for k in (variants or VARIANTS)]
    Ts = list(Ts or [base.model.T])
    seeds = list(dict.fromkeys(seeds)) if seeds else [base.train.seed]
    out = Path(out) if out is not None else Path(base.out_dir) / f"{base.name}_ablation"
    ensure_teacher(base)  # trained here, once, before any cell
    teacher = teacher_source(base)
    out.mkdir(parents=True, exist_ok=True)
    teacher_record = shared_teacher(base, teacher)
    cells = {(v.key, T, s): cell_config(raw, base, v, T, s, out, teacher, settings)
             for T in Ts for s in seeds for v in chosen}
    results: dict[CellKey, CellResult] = {}

    def label(key: CellKey) -> str:
        return f"{VARIANTS[key[0]].label} T={key[1]} seed {key[2]}"

    def record(key: CellKey, trained: bool, seconds: float) -> None:
        results[key] = cell = read_cell(cells[key].run_dir)
        status = f"done in {seconds:.0f} s (setup included)" if trained else "finished before, skipped"
        echo(f"{label(key)}: {status}: best {cell.best_top1:.2f}, final {cell.final_top1:.2f}, "
             f"firing {cell.firing_rate:.4f}, {cell.wall_s:.0f} s in the log")
        write_tables(out, str(recipe), teacher, teacher_record["top1"], results, chosen, Ts, seeds,
                     settings)

    if jobs == 1:
        for key, cfg in cells.items():
            echo(f"{label(key)}: {cfg.run_dir}")
            record(key, *train_cell(cfg, teacher_record))
        return out
    # an explicit train.threads is every cell's; else the free CPUs are shared
    threads = base.train.threads or max(1, choose_threads().threads // jobs)
    level = logging.getLogger("spikeguide").getEffectiveLevel()
    context = multiprocessing.get_context("spawn")
    stop_event = context.Event()
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=init_worker,
                             initargs=(threads, level, stop_event)) as pool:
        echo(f"{len(cells)} cells in {jobs} processes of {threads} thread(s) each, in {out}")
        with forward_signals_to_workers(stop_event):
            futures = {pool.submit(train_cell_in_worker, cells[key], teacher_record): key
                       for key in sorted(cells, key=lambda k: -k[1])}
            try:
                for future in as_completed(futures):
                    record(futures[future], *future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)  # the running cells end (or stop) first
                raise
    return out
