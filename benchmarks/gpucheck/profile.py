"""Section 5: where a training step of ratebp and hybrid spends its time (bptt beside them).

Each method's step is built as in the memory section (``memory_time.build`` and ``step``) at
``Sizes.profile_T``; after two untimed steps, ``torch.profiler`` records ``PROFILE_STEPS`` steps.
The table lists the operators and kernels with the most self time on the device (on CPU, the
most self CPU time), per step, and their share of the step's total.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from common import sync
from memory_time import build, step

from .context import Context
from .results import SectionResult
from .timebox import TimeBox

METHODS = ("ratebp", "hybrid", "bptt")
PROFILE_STEPS = 3
TOP = 12


def profile_method(ctx: Context, method: str) -> list[dict]:
    """The ``TOP`` operators of ``method``'s step by self time, per step."""
    net = ctx.sizes.memory_network
    args = argparse.Namespace(model=net.model, width=net.width, batch=net.batch,
                              T=ctx.sizes.profile_T, device=str(ctx.device), conv_steps=None)
    parts = build(args, method)
    for _ in range(2):  # builds and compilation stay out of the profile
        step(*parts)
    sync(ctx.device)
    cuda = ctx.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(PROFILE_STEPS):
            step(*parts)
        sync(ctx.device)
    events = prof.key_averages()
    self_time = ((lambda e: e.self_device_time_total) if cuda
                 else (lambda e: e.self_cpu_time_total))
    total = sum(self_time(e) for e in events) or 1.0
    top = sorted(events, key=self_time, reverse=True)[:TOP]
    return [{"name": e.key, "calls": e.count // PROFILE_STEPS,
             "self_ms": self_time(e) / 1e3 / PROFILE_STEPS, "share": self_time(e) / total,
             "cpu_ms": e.self_cpu_time_total / 1e3 / PROFILE_STEPS} for e in top]


def run(ctx: Context, box: TimeBox, result: SectionResult) -> None:
    net = ctx.sizes.memory_network
    where = "device" if ctx.device.type == "cuda" else "CPU"
    result.data["methods"] = {}
    for i, method in enumerate(METHODS):
        # about five steps each (two untimed, three profiled), from the memory section's figure
        rows = ctx.results.get("memory", SectionResult("", "")).data.get("rows", [])
        known = [r["step_s"] for r in rows if r["method"] == method]
        if not box.fits(5 * known[-1] if known else 0.0, f"profile of {method}"):
            continue
        try:
            top = profile_method(ctx, method)
        except Exception as err:  # the other methods go on
            result.check(f"profile of {method}", False, f"{type(err).__name__}: {err}"[:300])
            continue
        finally:
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
        table = result.table(
            f"{method}: top {len(top)} operators and kernels by self {where} time, "
            f"{net.model} width {net.width:g}, batch {net.batch}, T={ctx.sizes.profile_T}",
            ["operator / kernel", "calls per step", f"self {where} ms per step",
             f"share of {where} time"] + (["self CPU ms per step"] if where == "device" else []))
        for row in top:
            table.add(row["name"][:90], row["calls"], f"{row['self_ms']:.3f}",
                      f"{row['share']:.1%}",
                      *([f"{row['cpu_ms']:.3f}"] if where == "device" else []))
        result.data["methods"][method] = top
