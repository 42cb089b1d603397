"""Peak memory and time of one training step: ``bptt`` against ``ratebp`` and ``hybrid``.

A training step is the method's loss on random 32x32 images, backward, and an SGD step (with
momentum) over all trainable parameters of the method. The hybrid method distills from an
untrained ANN twin: only its cost matters here.

    python benchmarks/memory_time.py --width 0.25 --batch 32 --T 1 2 4 8
    python benchmarks/memory_time.py --device cuda      # torch.cuda.max_memory_allocated
    python benchmarks/memory_time.py --methods ratebp --T 8 --conv-steps 8   # method.conv_steps

Time: for each T, one fresh subprocess builds every method (same seed, same batch), runs
``--warmup`` untimed steps of each, then ``--steps`` rounds in which each method takes one timed
step in turn. Load from other processes therefore falls on all methods alike; the table reports
each method's median wall time and median CPU time of the process (which load inflates less than
wall time), and the ratios to ``bptt`` compare medians of the same process. ``--threads``
sets torch's threads (default 1; ``auto``: what training would choose,
:func:`spikeguide.training.threads.choose_threads`). The machine, the threads and the load
average before and after are printed with the tables.

Memory on CPU: every (method, T) runs in a fresh subprocess, which reports its peak resident set
size (``getrusage(RUSAGE_SELF).ru_maxrss``) after ``--warmup`` + 1 steps minus the same value
after building the model, the method, the optimizer and the batch. A fresh process per
configuration keeps one configuration's high-water mark and allocator caches out of the next; this
child runs with glibc's ``MALLOC_MMAP_THRESHOLD_`` at 128 KiB so that large tensors are mapped and
unmapped one by one and the resident size follows the live tensors instead of a fragmented heap.
The figure therefore includes everything a step allocates (activations, saved tensors, gradients,
optimizer state, oneDNN scratch), as an out-of-memory error on the real machine would.
(``torch.profiler``'s memory events would count tensors only and need a replay of the allocation
trace for the peak.) On a GPU the timing process reports ``torch.cuda.max_memory_allocated``
minus the memory allocated before the steps, per method (the methods then run one after the
other, each with its own peak).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from common import machine
from spikeguide.methods import METHODS
from spikeguide.models import create_model
from spikeguide.training.threads import choose_threads


def build(args: argparse.Namespace, method_name: str):
    torch.manual_seed(0)
    device = torch.device(args.device)
    student = create_model(args.model, T=args.T, width=args.width).to(device)
    method_cls = METHODS.get(method_name)
    kw = {}
    if method_cls.needs_teacher:
        kw["teacher"] = create_model(args.model, spiking=False, width=args.width).to(device)
    if args.conv_steps is not None and "conv_steps" in method_cls.Options.__dataclass_fields__:
        kw["options"] = method_cls.Options(conv_steps=args.conv_steps)
    method = method_cls(student, **kw).to(device).train()
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, student.num_classes, (args.batch,), device=device)
    return method, optimizer, x, y


def step(method, optimizer, x, y) -> None:
    optimizer.zero_grad(set_to_none=True)
    method.training_step(x, y).loss.backward()
    optimizer.step()


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def set_threads(threads: str) -> int:
    torch.set_num_threads(choose_threads().threads if threads == "auto" else int(threads))
    return torch.get_num_threads()


def time_child(args: argparse.Namespace) -> list[dict]:
    """Median step time of every method at one T, their steps interleaved."""
    threads = set_threads(args.threads)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    runs = {m: build(args, m) for m in args.methods}
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    cpu_times: dict[str, list[float]] = {m: [] for m in args.methods}
    peaks = {}
    for m, run in runs.items():
        if cuda:  # each method's own peak, measured over its warm-up
            sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        for _ in range(args.warmup):
            step(*run)
        if cuda:
            sync()
            peaks[m] = (torch.cuda.max_memory_allocated() - base) / 2**20
    for _ in range(args.steps):
        for m, run in runs.items():
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            step(*run)
            sync()
            times[m].append(time.perf_counter() - start)
            cpu_times[m].append(time.process_time() - cpu_start)
    return [{"method": m, "T": args.T, "threads": threads, "step_s": statistics.median(times[m]),
             "cpu_s": statistics.median(cpu_times[m]), "times": times[m],
             **({"peak_mib": peaks[m]} if cuda else {})} for m in args.methods]


def memory_child(args: argparse.Namespace) -> list[dict]:
    """Peak resident memory of one method's steps, above what building it took."""
    set_threads(args.threads)
    (method_name,) = args.methods
    run = build(args, method_name)
    base = peak_bytes()
    for _ in range(args.warmup + 1):
        step(*run)
    return [{"method": method_name, "T": args.T, "peak_mib": (peak_bytes() - base) / 2**20}]


def run_child(args: argparse.Namespace, methods: list[str], T: int, kind: str) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", "--measure", kind, "--T", str(T),
           "--methods", *methods]
    for key in ("model", "width", "batch", "steps", "warmup", "threads", "device"):
        cmd += [f"--{key}", str(getattr(args, key))]
    if args.conv_steps is not None:
        cmd += ["--conv-steps", str(args.conv_steps)]
    env = dict(os.environ)
    if kind == "memory":
        env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args: argparse.Namespace, T: int) -> list[dict]:
    rows = run_child(args, args.methods, T, "time")
    # on a GPU the timing child's figures are exact
    if args.memory and not args.device.startswith("cuda"):
        for row in rows:
            row["peak_mib"] = run_child(args, [row["method"]], T, "memory")[0]["peak_mib"]
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def tables(rows: list[dict], methods: list[str], Ts: list[int], memory: bool) -> str:
    by = {(r["method"], r["T"]): r for r in rows}
    columns = [("MiB", "peak_mib", ".0f"), ("s/step", "step_s", ".3f"),
               ("CPU s/step", "cpu_s", ".3f")]
    if not memory:
        columns = columns[1:]
    out = [markdown(["method"] + [f"T={T} {unit}" for T in Ts for unit, _, _ in columns],
                    [[m] + [f"{by[m, T][k]:{fmt}}" for T in Ts for _, k, fmt in columns]
                     for m in methods])]
    measures = [("time", "step_s"), ("CPU time", "cpu_s"), ("memory", "peak_mib")]
    if "bptt" in methods and len(methods) > 1:
        out += ["", "Relative to bptt at the same T (times: medians of the same process):", "",
                markdown(["method", "measure"] + [f"T={T}" for T in Ts],
                         [[m, what] + [f"{by[m, T][k] / by['bptt', T][k]:.0%}" for T in Ts]
                          for m in methods if m != "bptt"
                          for what, k in measures[:3 if memory else 2]])]
    if memory and Ts[0] == 1 and len(Ts) > 1:
        out += ["", "Memory relative to the method's own T=1:", "",
                markdown(["method"] + [f"T={T}" for T in Ts[1:]],
                         [[m] + [f"{by[m, T]['peak_mib'] / by[m, 1]['peak_mib']:.2f}x"
                                 for T in Ts[1:]] for m in methods])]
    return "\n".join(out)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet19")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--methods", nargs="+", default=["bptt", "ratebp", "hybrid"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", default="1", help="torch threads, or 'auto' (default: 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--conv-steps", type=int, default=None,
                   help="method.conv_steps of ratebp and hybrid (default: the method's)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="time only (skip the memory subprocesses)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--measure", default="time", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.T = args.T[0]
        print(json.dumps((time_child if args.measure == "time" else memory_child)(args)))
        return
    conv = "" if args.conv_steps is None else f"; conv_steps {args.conv_steps}"
    print(f"{args.model} width {args.width:g}, batch {args.batch}, 32x32, {args.device}{conv}; "
          f"median of {args.steps} interleaved steps after {args.warmup}")
    load_before = load()
    rows = []
    for T in args.T:
        rows += measure(args, T)
    torch.set_num_threads(rows[0]["threads"])  # so that the machine line names the runs' count
    print(f"machine: {machine(torch.device(args.device))}; {len(os.sched_getaffinity(0))} CPUs "
          "usable by this process")
    print(f"load average before: {load_before}")
    print(tables(rows, args.methods, args.T, args.memory))
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
