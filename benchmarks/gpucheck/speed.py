"""Section 3: training throughput of spikeguide's backends against SpikingJelly 2.0.0.

One group per network and precision (fp32, or bf16 autocast); in each, every backend and
SpikingJelly run in both memory formats on the same random batch and the same initial weights
(``common.py``), timed in interleaved rounds; the best round counts, the median is beside it.
A backend that runs another one's kernels at this precision (``triton`` at bf16 runs
``fused``) is not timed twice. The peak memory of a step is read during the warm-up.

SpikingJelly picks its LIF implementation once per process (``SJ_LIF_CUDA_IMPLEMENTATION``,
default: its native CUDA build if present, else Triton, else torch). This process times its
default; a child process with ``SJ_LIF_CUDA_IMPLEMENTATION=torch`` times its torch
implementation on the same groups, so those rows are timed apart from the others.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import torch

from common import (
    FORMATS,
    PRECISIONS,
    autocast,
    batch_for,
    import_spikingjelly,
    lif_layer_calls,
    make_step,
    spikeguide_net,
    spikingjelly_implementation,
    spikingjelly_step,
    sync,
    time_contenders,
    time_rounds,
)
from spikeguide.models import SpikingNet
from spikeguide.neurons.kernels import resolve_backend
from spikeguide.neurons.surrogates import ATan
from spikeguide.ratepass import record_neuron

from .context import Context, Network
from .correctness import unavailable
from .results import SectionResult
from .timebox import TimeBox

BACKENDS = ("torch", "fused", "triton")
CHILD_SHARE = 0.3  # of the section's time, for the child timing SpikingJelly's torch implementation


def timed_backends(device: torch.device) -> list[str]:
    """The backends worth timing here: Triton in its CPU interpreter (the smoke run) checks
    logic, its speed means nothing."""
    return [b for b in BACKENDS if not unavailable(b, device)
            and not (b == "triton" and device.type != "cuda")]


def neuron_dtype(net: SpikingNet, x: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype of the currents reaching the network's first neuron (under autocast)."""
    seen: list[torch.dtype] = []
    first = net.neurons()[0][1]
    hook = first.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    try:
        with torch.no_grad(), autocast(x.device, amp_dtype):
            net.eval()(x)
    finally:
        hook.remove()
        net.train()
    return seen[0]


def contenders(network: Network, precision: str, device: torch.device, sj,
               with_spikeguide: bool = True) -> tuple[dict[str, Callable[[], None]],
                                                      dict[str, dict[str, Any]], list[str]]:
    """The training steps of one group, what each runs, and notes."""
    amp = PRECISIONS[precision]
    x, y = batch_for(network.batch, device)
    steps, info, notes = {}, {}, []
    for fmt in FORMATS:
        xf = x.to(memory_format=FORMATS[fmt])
        timed: dict[str, str] = {}  # resolved backend -> the one timed for it
        net = None
        # without spikeguide's rows, one network still lends the twin its weights
        for backend in timed_backends(device) if with_spikeguide else ("torch",):
            net = spikeguide_net(network.model, network.T, network.width, backend, device, fmt)
            runs = resolve_backend(backend, torch.empty(0, dtype=neuron_dtype(net, xf, amp),
                                                        device=device))
            if runs in timed:
                if fmt == "contiguous":
                    notes.append(f"{backend!r} runs {runs!r} at {precision}: timed once, as "
                                 f"{timed[runs]!r}")
                continue
            timed[runs] = backend
            if with_spikeguide:
                label = f"spikeguide {backend}, {fmt}"
                steps[label] = make_step(net, xf, y, amp_dtype=amp)
                info[label] = {"kind": "spikeguide", "backend": backend, "runs": runs,
                               "format": fmt}
        if sj is not None:
            impl = spikingjelly_implementation(sj, device)
            label = f"spikingjelly {impl}, {fmt}"
            steps[label], line = spikingjelly_step(net, xf, y, fmt, sj, amp)
            info[label] = {"kind": "spikingjelly", "backend": impl, "runs": impl, "format": fmt}
            if fmt == "contiguous":
                notes.append(f"SpikingJelly twin: {line}")
    return steps, info, notes


def warm_up(step: Callable[[], None], device: torch.device) -> tuple[float, float | None]:
    """Two steps; the second's seconds and peak memory above what was allocated before it."""
    step()  # kernels compile, the allocator grows
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    step()
    sync(device)
    seconds = time.perf_counter() - start
    if device.type != "cuda":
        return seconds, None
    return seconds, (torch.cuda.max_memory_allocated(device) - base) / 2**20


def time_group(steps: dict[str, Callable[[], None]], batch: int, rounds: int, max_iters: int,
               seconds: float, device: torch.device) -> dict[str, dict[str, Any]]:
    """label -> img/s of each round, peak MiB (or an error); as many steps per round as fit."""
    out: dict[str, dict[str, Any]] = {}
    step_seconds = {}
    for label, step in list(steps.items()):
        try:
            step_seconds[label], peak = warm_up(step, device)
            out[label] = {"peak_mib": peak}
        except Exception as err:  # one contender failing leaves the others timed
            out[label] = {"error": f"{type(err).__name__}: {err}"[:300]}
            del steps[label]
    per_round = sum(step_seconds.values())
    iters = max(1, min(max_iters, int(seconds / (rounds * per_round)) if per_round else 1))
    for label, rates in time_contenders(steps, batch, rounds, iters, device, warmup=0).items():
        out[label]["rates"] = rates
    return out


def group_key(network: Network, precision: str) -> str:
    return f"{network.label()}, {precision}"


def child_main(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child process: SpikingJelly's steps only, for every group of ``spec``."""
    device = torch.device(spec["device"])
    sj = import_spikingjelly()
    deadline = spec["deadline"]
    groups, skipped = {}, []
    for i, (fields, precision) in enumerate(spec["groups"]):
        network = Network(*fields)
        key = group_key(network, precision)
        left = deadline - time.monotonic()
        if left <= 0:
            skipped.append(key)
            continue
        steps, info, _ = contenders(network, precision, device, sj, with_spikeguide=False)
        timed = time_group(steps, network.batch, spec["rounds"], spec["max_iters"],
                           left / (len(spec["groups"]) - i), device)
        groups[key] = {label: {**info[label], **timed[label]} for label in timed}
    return {"implementation": spikingjelly_implementation(sj, device), "groups": groups,
            "skipped": skipped}


def run_child(ctx: Context, groups: list[tuple[Network, str]], seconds: float
              ) -> dict[str, Any]:
    # time.monotonic is the machine's clock (CLOCK_MONOTONIC): the child reads the same deadline
    spec = {"device": str(ctx.device), "deadline": time.monotonic() + seconds,
            "rounds": ctx.sizes.speed_rounds,
            "max_iters": ctx.sizes.speed_max_iters,
            "groups": [[[n.model, n.width, n.batch, n.T], p] for n, p in groups]}
    env = {**os.environ, "SJ_LIF_CUDA_IMPLEMENTATION": "torch"}
    # the child stops starting groups at its deadline; one under way may run on a little
    done = subprocess.run([sys.executable, str(ctx.script), "--sj-child", json.dumps(spec)],
                          env=env, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode:
        raise RuntimeError(f"the SpikingJelly child failed: {done.stderr.strip()[-1000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def layer_unit(ctx: Context, result: SectionResult) -> None:
    """Milliseconds of one LIF layer (forward + backward) per backend, and of the rate-BP
    recording pass on the same currents."""
    T, N = ctx.sizes.layer
    calls, x, _ = lif_layer_calls(T, N, timed_backends(ctx.device), ctx.device)
    current = x.detach()
    calls["record_neuron (recording pass, no backward)"] = (
        lambda: record_neuron(current, 0.5, 1.0, "hard", False, ATan()))
    times = time_rounds(calls, ctx.sizes.speed_rounds, ctx.sizes.speed_max_iters, ctx.device)
    table = result.table(f"One LIF layer [{T}, {N}], hard reset, ATan: forward + backward",
                         ["what", "ms (best)", "ms (median)"])
    for name, seconds in times.items():
        table.add(name, f"{min(seconds) * 1e3:.3f}", f"{statistics.median(seconds) * 1e3:.3f}")
    result.data["layer_ms"] = {name: min(s) * 1e3 for name, s in times.items()}


def group_table(result: SectionResult, key: str, timed: dict[str, dict[str, Any]]) -> None:
    table = result.table(key, ["contender", "runs", "img/s (best)", "img/s (median)",
                               "step peak MiB", "ratio vs fastest SpikingJelly"])
    sj_best = max((max(r["rates"]) for r in timed.values()
                   if r["kind"] == "spikingjelly" and "rates" in r), default=None)
    for label, row in timed.items():
        if "error" in row:  # spikeguide's own failures fail the section; SpikingJelly's are noted
            table.add(label, row["runs"], "error", row["error"], None, None)
            if row["kind"] == "spikeguide":
                result.check(f"speed {key}: {label}", False, row["error"])
            else:
                result.note(f"{key}: {label} failed: {row['error']}")
            continue
        best = max(row["rates"])
        table.add(label, row["runs"], best, statistics.median(row["rates"]), row["peak_mib"],
                  f"{best / sj_best:.2f}" if sj_best else None)


def run(ctx: Context, box: TimeBox, result: SectionResult) -> None:
    sj = import_spikingjelly()
    if sj is None:
        result.note("SpikingJelly: not available (does not import); spikeguide timed alone")
    groups = [(n, p) for p in PRECISIONS for n in ctx.sizes.speed_networks]
    child: dict[str, Any] = {"groups": {}}
    # on CPU SpikingJelly has only its torch implementation; the smoke run still takes the path
    if sj is not None and (spikingjelly_implementation(sj, ctx.device) != "torch-reference"
                           or ctx.smoke):
        try:
            child = run_child(ctx, groups, CHILD_SHARE * box.left())
            result.note(f"SpikingJelly rows {child['implementation']!r}: timed in a child process "
                        "with SJ_LIF_CUDA_IMPLEMENTATION=torch")
            for key in child["skipped"]:
                result.skip(f"SpikingJelly {child['implementation']}: {key}")
        except Exception as err:  # SpikingJelly's side: noted, the section goes on
            result.note(f"SpikingJelly's torch implementation not timed: {err}")
    result.data["groups"] = []
    for i, (network, precision) in enumerate(groups):
        key = group_key(network, precision)
        if box.left() <= 0:
            result.skip(key)
            continue
        try:
            steps, info, notes = contenders(network, precision, ctx.device, sj)
            timed = time_group(steps, network.batch, ctx.sizes.speed_rounds,
                               ctx.sizes.speed_max_iters, box.left() / (len(groups) - i + 1),
                               ctx.device)
        except Exception as err:  # a group that cannot be built or timed leaves the others
            result.check(f"speed {key}", False, f"{type(err).__name__}: {err}")
            continue
        for note in notes:
            result.note(f"{key}: {note}")
        timed = {label: {**info[label], **row} for label, row in timed.items()}
        for label, row in child["groups"].get(key, {}).items():  # on CPU both run 'torch-reference'
            timed[f"{label} (child process)" if label in timed else label] = row
        group_table(result, key, timed)
        result.data["groups"].append({"network": network.label(), "precision": precision,
                                      "rows": timed})
        del steps
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    if box.fits(2.0, "one LIF layer"):
        layer_unit(ctx, result)
