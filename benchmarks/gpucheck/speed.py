"""Section 3: training throughput of spikeguide's backends against SpikingJelly 2.0.0.

One group per network and precision (fp32, or bf16 autocast); in each, every backend and
SpikingJelly run in both memory formats on the same random batch and the same initial weights
(``common.py``), timed in interleaved rounds; the best round counts, the median is beside it.
Attention has no module-by-module SpikingJelly translation: the Spikformer groups time
SpikingJelly's own Spikformer at the same depth, width and heads (its own initial weights).
A backend that runs another one's kernels at this precision is not timed twice. Beside them:
the ``auto`` backend under ``torch.compile`` (channels_last; its compilation is the first step,
reported apart from the timed rounds), and SpikingJelly in bf16 through its precision API
(``common.spikingjelly_precision``), not plain autocast, which sends its neurons to its eager
reference path.

Columns: "first step s" is the first step alone (kernel builds, autotuning and compilation
included; never part of the rates); img/s best and median of the rounds; TFLOP/s counted from
the convolution and linear shapes (``flops.py``) against a bf16 matrix-multiply ceiling measured
in the same run; "step peak MiB" is the peak allocated during one step above what was allocated
just before it, after a warm-up step: activations, temporaries and gradients (the step frees and
re-creates them), not weights, buffers or optimizer state. Ratios are against SpikingJelly's
fastest: the fastest of its implementations that run on the machine (named in the notes); the
median ratio stands beside the best one, and one within the rounds' spread is called "within
noise", not a win.

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
from .flops import matmul_ceiling, step_flops
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


def compiled(net: SpikingNet, device: torch.device):
    """``net`` under ``torch.compile``; on CPU (the smoke run) without code generation, which
    takes minutes there: the path is exercised, its speed means nothing."""
    return torch.compile(net) if device.type == "cuda" else torch.compile(net, backend="aot_eager")


def contenders(network: Network, precision: str, device: torch.device, sj,
               with_spikeguide: bool = True, with_compile: bool = False
               ) -> tuple[dict[str, Callable[[], None]], dict[str, dict[str, Any]], list]:
    """The training steps of one group, what each runs, and notes (the first: the step's
    FLOPs); ``with_compile`` adds the compiled ``auto`` row."""
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
        if with_spikeguide and with_compile and fmt == "channels_last":
            auto = spikeguide_net(network.model, network.T, network.width, "auto", device, fmt)
            runs = resolve_backend("auto", torch.empty(0, dtype=neuron_dtype(auto, xf, amp),
                                                       device=device))
            label = f"spikeguide auto + torch.compile, {fmt}"
            steps[label] = make_step(compiled(auto, device), xf, y, amp_dtype=amp)
            info[label] = {"kind": "spikeguide", "backend": "auto + compile", "runs": runs,
                           "format": fmt}
        if sj is not None:
            impl = spikingjelly_implementation(sj, device)
            if amp is not None:
                impl += " (precision API)"
            label = f"spikingjelly {impl}, {fmt}"
            try:  # SpikingJelly's side failing (its precision API, say) leaves ours timed
                steps[label], line = spikingjelly_step(net, xf, y, fmt, sj, amp)
            except Exception as err:
                notes.append(f"{label} could not be set up: {type(err).__name__}: {err}"[:400])
                continue
            info[label] = {"kind": "spikingjelly", "backend": impl, "runs": impl, "format": fmt}
            if fmt == "contiguous":
                notes.append(f"SpikingJelly twin: {line}")
    flops = step_flops(net, x) if net is not None else None
    return steps, info, [flops, *notes]


def warm_up(step: Callable[[], None], device: torch.device
            ) -> tuple[float, float, float | None]:
    """Two steps: the first's seconds (builds and compilation included), the second's, and the
    second's peak memory above what was allocated before it."""
    start = time.perf_counter()
    step()  # kernels compile, the allocator grows
    sync(device)
    first = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    step()
    sync(device)
    seconds = time.perf_counter() - start
    if device.type != "cuda":
        return first, seconds, None
    return first, seconds, (torch.cuda.max_memory_allocated(device) - base) / 2**20


def time_group(steps: dict[str, Callable[[], None]], batch: int, rounds: int, max_iters: int,
               seconds: float, device: torch.device) -> dict[str, dict[str, Any]]:
    """label -> img/s of each round, peak MiB (or an error); as many steps per round as fit."""
    out: dict[str, dict[str, Any]] = {}
    step_seconds = {}
    for label, step in list(steps.items()):
        try:
            first, step_seconds[label], peak = warm_up(step, device)
            out[label] = {"peak_mib": peak, "first_step_s": first}
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


def spread(rates: list[float]) -> float:
    """The rounds' spread relative to their median: (max - min) / median."""
    return (max(rates) - min(rates)) / statistics.median(rates)


def verdict(row: dict[str, Any], sj: dict[str, Any]) -> str:
    """Faster, slower, or within noise: the median ratio against the larger of the two rows'
    spreads (one round has no spread: not judged)."""
    if min(len(row["rates"]), len(sj["rates"])) < 2:
        return "one round: not judged"
    ratio = statistics.median(row["rates"]) / statistics.median(sj["rates"])
    if abs(ratio - 1) <= max(spread(row["rates"]), spread(sj["rates"])):
        return "within noise"
    return "faster" if ratio > 1 else "slower"


def group_table(result: SectionResult, key: str, timed: dict[str, dict[str, Any]],
                flops: float | None, ceiling: float | None) -> None:
    table = result.table(key, ["contender", "runs", "first step s", "img/s (best)",
                               "img/s (median)", "TFLOP/s (best)", "% of bf16 ceiling",
                               "step peak MiB", "vs SJ fastest (best)", "vs SJ fastest (median)",
                               "verdict"])
    sj_rows = {label: r for label, r in timed.items()
               if r["kind"] == "spikingjelly" and "rates" in r}
    sj_label = max(sj_rows, key=lambda label: max(sj_rows[label]["rates"]), default=None)
    sj = sj_rows.get(sj_label)
    if sj_label is not None:
        result.note(f"{key}: SpikingJelly's fastest is {sj_label!r}, the fastest of its "
                    f"implementations timed here ({'; '.join(sorted(sj_rows))})")
    for label, row in timed.items():
        if "error" in row:  # spikeguide's own failures fail the section; SpikingJelly's are noted
            table.add(label, row["runs"], None, "error", row["error"], *[None] * 6)
            if row["kind"] == "spikeguide":
                result.check(f"speed {key}: {label}", False, row["error"])
            else:
                result.note(f"{key}: {label} failed: {row['error']}")
            continue
        best, median = max(row["rates"]), statistics.median(row["rates"])
        tflops = best * flops / row_batch(key) / 1e12 if flops else None
        against = sj is not None and row is not sj
        table.add(label, row["runs"], f"{row['first_step_s']:.2f}", best, median,
                  f"{tflops:.2f}" if tflops else None,
                  f"{tflops / ceiling:.1%}" if tflops and ceiling else None, row["peak_mib"],
                  f"{best / max(sj['rates']):.2f}" if against else None,
                  f"{median / statistics.median(sj['rates']):.2f}" if against else None,
                  verdict(row, sj) if against else None)


def row_batch(key: str) -> int:
    """The batch of a group from its key (``Network.label``)."""
    return int(key.split("batch ", 1)[1].split(",", 1)[0])


def ceiling_unit(ctx: Context, result: SectionResult) -> float:
    n = 8192 if ctx.device.type == "cuda" else 256
    tflops = matmul_ceiling(ctx.device, n)
    table = result.table("bf16 matrix multiply ceiling (this run)",
                         ["what", "TFLOP/s (best of 10)"])
    table.add(f"[{n}, {n}] @ [{n}, {n}], bf16", f"{tflops:.1f}")
    result.data["bf16_matmul_tflops"] = tflops
    return tflops


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
    if sj is not None and ctx.device.type == "cuda":
        missing = sj.neuron_implementation("lif", ctx.device)["unavailable"]
        result.note("SpikingJelly's implementations that do not run on this machine, so not "
                    "among those 'its fastest' is chosen from: " + ("; ".join(
                        f"{name} ({why})" for name, why in missing.items()) or "none"))
    ceiling = ceiling_unit(ctx, result)
    result.note("step peak MiB: the peak allocated during one step above what was allocated "
                "just before it, after a warm-up step: activations, temporaries and gradients; "
                "not weights, buffers or optimizer state")
    result.data["groups"] = []
    for i, (network, precision) in enumerate(groups):
        key = group_key(network, precision)
        if box.left() <= 0:
            result.skip(key)
            continue
        try:
            # compilation takes about a minute a network: the first network's groups only
            steps, info, (flops, *notes) = contenders(
                network, precision, ctx.device, sj,
                with_compile=network == ctx.sizes.speed_networks[0])
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
        group_table(result, key, timed, flops, ceiling)
        result.data["groups"].append({"network": network.label(), "precision": precision,
                                      "step_flops": flops, "rows": timed})
        del steps
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    if box.fits(2.0, "one LIF layer"):
        layer_unit(ctx, result)
