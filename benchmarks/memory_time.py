"""Peak memory and time of one training step: ``bptt`` against ``ratebp`` and ``hybrid``.

A training step is the method's loss on random 32x32 images, backward, and an SGD step (with
momentum) over all trainable parameters of the method. The hybrid method distills from an
untrained ANN twin: only its cost matters here.

    python benchmarks/memory_time.py --width 0.25 --batch 32 --T 1 2 4 8
    python benchmarks/memory_time.py --device cuda      # torch.cuda.max_memory_allocated

Memory on CPU: every (method, T) runs in a fresh subprocess, which reports its peak resident set
size (``getrusage(RUSAGE_SELF).ru_maxrss``) after ``--warmup`` + 1 steps minus the same value
after building the model, the method, the optimizer and the batch. A fresh process per
configuration keeps one configuration's high-water mark and allocator caches out of the next; this
child runs with glibc's ``MALLOC_MMAP_THRESHOLD_`` at 128 KiB so that large tensors are mapped and
unmapped one by one and the resident size follows the live tensors instead of a fragmented heap.
The figure therefore includes everything a step allocates (activations, saved tensors, gradients,
optimizer state, oneDNN scratch), as an out-of-memory error on the real machine would.
(``torch.profiler``'s memory events would count tensors only and need a replay of the allocation
trace for the peak.) On a GPU the child reports ``torch.cuda.max_memory_allocated`` minus the
memory allocated before the steps.

Time: a second fresh subprocess with the default allocator (a fresh mapping per tensor would add
page faults that a real run does not pay) reports the median over ``--steps`` timed steps after
``--warmup`` untimed ones. The machine may be shared: the load average before and after is
printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from spikeguide.methods import METHODS
from spikeguide.models import create_model


def build(args: argparse.Namespace):
    torch.manual_seed(0)
    device = torch.device(args.device)
    student = create_model(args.model, T=args.T, width=args.width).to(device)
    kw = {}
    if METHODS.get(args.method).needs_teacher:
        kw["teacher"] = create_model(args.model, spiking=False, width=args.width).to(device)
    method = METHODS.get(args.method)(student, **kw).to(device).train()
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


def child(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    method, optimizer, x, y = build(args)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = peak_bytes()
    for _ in range(args.warmup):
        step(method, optimizer, x, y)
    times = []
    for _ in range(args.steps if args.measure == "time" else 1):
        sync()
        start = time.perf_counter()
        step(method, optimizer, x, y)
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if cuda else peak_bytes()) - base
    return {"method": args.method, "T": args.T, "peak_mib": peak / 2**20,
            "step_s": statistics.median(times), "times": times}


def run_child(args: argparse.Namespace, method: str, T: int, measure: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--method", method, "--T", str(T),
           "--measure", measure]
    for key in ("model", "width", "batch", "steps", "warmup", "threads", "device"):
        cmd += [f"--{key}", str(getattr(args, key))]
    env = dict(os.environ)
    if measure == "memory":
        env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args: argparse.Namespace, method: str, T: int) -> dict:
    row = run_child(args, method, T, "time")
    if not args.device.startswith("cuda"):  # on a GPU the timing child's figure is exact
        row["peak_mib"] = run_child(args, method, T, "memory")["peak_mib"]
    return row


def machine(args: argparse.Namespace) -> str:
    if args.device.startswith("cuda"):
        where = torch.cuda.get_device_name()
    else:
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return (f"{where}; torch {torch.__version__}, {args.threads} thread(s); python "
            f"{platform.python_version()}; load average {os.getloadavg()[0]:.2f}")


def table(rows: list[dict], methods: list[str], Ts: list[int]) -> str:
    by = {(r["method"], r["T"]): r for r in rows}
    lines = ["| method | " + " | ".join(f"T={T} MiB | T={T} s/step" for T in Ts) + " |",
             "|---|" + "---|---|" * len(Ts)]
    for m in methods:
        cells = [f"{by[m, T]['peak_mib']:.0f} | {by[m, T]['step_s']:.3f}" for T in Ts]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if "bptt" in methods:
        lines += ["", "Relative to bptt at the same T (memory / time):", ""]
        for m in methods:
            if m != "bptt":
                cells = [f"T={T}: {by[m, T]['peak_mib'] / by['bptt', T]['peak_mib']:.0%} / "
                         f"{by[m, T]['step_s'] / by['bptt', T]['step_s']:.0%}" for T in Ts]
                lines.append(f"- {m}: " + ", ".join(cells))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet19")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--methods", nargs="+", default=["bptt", "ratebp", "hybrid"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--measure", default="time", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.T = args.T[0]
        print(json.dumps(child(args)))
        return
    print(f"{args.model} width {args.width:g}, batch {args.batch}, 32x32, {args.device}; "
          f"median of {args.steps} steps after {args.warmup}")
    print(f"machine: {machine(args)}")
    rows = [measure(args, m, T) for T in args.T for m in args.methods]
    print(table(rows, args.methods, args.T))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
