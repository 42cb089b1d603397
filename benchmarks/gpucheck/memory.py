"""Section 4: peak memory and time of one training step of bptt, ratebp and hybrid at each T.

A step is built and taken as ``benchmarks/memory_time.py`` does (``build`` and ``step``: the
method's loss on random 32x32 images, backward, SGD with momentum). On CUDA every configuration
runs in this process: the peak is ``torch.cuda.max_memory_allocated`` over the warm-up and the
timed steps, minus what was allocated before them; time is the median of the timed steps. On CPU
an in-process run cannot separate one configuration's memory from another's, so only time is
reported (``memory_time.py`` measures CPU memory in fresh processes).
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
    sync(ctx.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
        base = torch.cuda.memory_allocated(ctx.device)

    def timed_step() -> float:
        start = time.perf_counter()
        step(*parts)
        sync(ctx.device)
        return time.perf_counter() - start

    times = [timed_step()]  # the warm-up
    while len(times) <= ctx.sizes.memory_max_steps and sum(times) + times[-1] <= seconds:
        times.append(timed_step())
    peak = (torch.cuda.max_memory_allocated(ctx.device) - base) / 2**20 if cuda else None
    # when no step fits after the warm-up, the warm-up's time stands in (0 steps timed)
    return {"peak_mib": peak, "step_s": statistics.median(times[1:] or times),
            "steps": len(times) - 1}


def run(ctx: Context, box: TimeBox, result: SectionResult) -> None:
    net = ctx.sizes.memory_network
    if ctx.device.type != "cuda":
        result.note("CPU: memory is not measured in this process; benchmarks/memory_time.py "
                    "measures it in fresh processes")
    table = result.table(f"One training step, {net.model} width {net.width:g}, batch {net.batch}",
                         ["method", "T", "peak MiB", "s/step", "steps timed",
                          "memory vs bptt", "time vs bptt"])
    rows: dict[tuple[str, int], dict] = {}
    last: dict[str, tuple[int, float]] = {}  # method -> (T, s/step) of its last measurement
    units = [(T, method) for T in ctx.sizes.memory_T for method in METHODS]
    for i, (T, method) in enumerate(units):
        # a warm-up and a timed step, scaled from this method's last T
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
        table.add(method, T, row["peak_mib"], f"{row['step_s']:.4f}", row["steps"],
                  mem_ratio, time_ratio)
    result.data["rows"] = [{"method": m, "T": T, **r} for (m, T), r in rows.items()]
