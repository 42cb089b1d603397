"""Section 4: peak memory and time of one training step of bptt, ratebp and hybrid at each T.

A step is built and taken as ``benchmarks/memory_time.py`` does (``build`` and ``step``: the
method's loss on random 32x32 images, backward, SGD with momentum). The first step (kernel
builds and compilation included) is timed alone and reported apart; then at least one step is
timed, more while the section's time allows, and the median counts. On CUDA every configuration
runs in this process, and the peak has the speed section's definition: the peak allocated during
the timed steps above what was allocated just before them, after the first step (activations,
temporaries and gradients; not weights, buffers or optimizer state). On CPU an in-process run
cannot separate one configuration's memory from another's, so only time is reported
(``memory_time.py`` measures CPU memory in fresh processes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import sync
from memory_time import build, step

from .context import Context
from .results import SectionResult
from .timebox import TimeBox

METHODS = ("bptt", "ratebp", "hybrid")


def measure(ctx: Context, method: str, T: int, seconds: float) -> dict[str, float | None]:
    net = ctx.sizes.memory_network
    args = argparse.Namespace(model=net.model, width=net.width, batch=net.batch, T=T,
                              device=str(ctx.device), conv_steps=None)
    parts = build(args, method)
    cuda = ctx.device.type == "cuda"

    def timed_step() -> float:
        start = time.perf_counter()
        step(*parts)
        sync(ctx.device)
        return time.perf_counter() - start

    sync(ctx.device)
    first = timed_step()  # builds, compilation, the allocator's first blocks
    if cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
        base = torch.cuda.memory_allocated(ctx.device)
    times = [timed_step()]
    while len(times) < ctx.sizes.memory_max_steps and sum(times) + times[-1] <= seconds:
        times.append(timed_step())
    peak = (torch.cuda.max_memory_allocated(ctx.device) - base) / 2**20 if cuda else None
    return {"peak_mib": peak, "first_step_s": first, "step_s": statistics.median(times),
            "steps": len(times)}


def run(ctx: Context, box: TimeBox, result: SectionResult) -> None:
    net = ctx.sizes.memory_network
    if ctx.device.type != "cuda":
        result.note("CPU: memory is not measured in this process; benchmarks/memory_time.py "
                    "measures it in fresh processes")
    table = result.table(f"One training step, {net.model} width {net.width:g}, batch {net.batch}",
                         ["method", "T", "first step s", "peak MiB", "s/step (median)",
                          "steps timed", "memory vs bptt", "time vs bptt"])
    rows: dict[tuple[str, int], dict] = {}
    last: dict[str, tuple[int, float]] = {}  # method -> (T, s/step) of its last measurement
    units = [(T, method) for T in ctx.sizes.memory_T for method in METHODS]
    for i, (T, method) in enumerate(units):
        # a first and a timed step, scaled from this method's last T
        guess = last[method][1] * T / last[method][0] * 2 if method in last else 0.0
        if not box.fits(guess, f"{method} at T={T}"):
            continue
        try:
            row = measure(ctx, method, T, box.left() / (len(units) - i))
        except Exception as err:  # out of memory, say: the other configurations go on
            result.check(f"{method} at T={T}", False, f"{type(err).__name__}: {err}"[:300])
            continue
        finally:
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
        rows[method, T] = row
        last[method] = (T, row["step_s"])
        bptt = rows.get(("bptt", T))
        mem_ratio = (f"{row['peak_mib'] / bptt['peak_mib']:.0%}"
                     if bptt and row["peak_mib"] is not None else None)
        time_ratio = f"{row['step_s'] / bptt['step_s']:.0%}" if bptt else None
        table.add(method, T, f"{row['first_step_s']:.2f}", row["peak_mib"],
                  f"{row['step_s']:.4f}", row["steps"], mem_ratio, time_ratio)
    result.data["rows"] = [{"method": m, "T": T, **r} for (m, T), r in rows.items()]
