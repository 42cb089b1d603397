"""Training step time at several torch thread counts, with and without competing CPU-bound jobs.

    python benchmarks/threads.py --method ratebp --T 4 --threads 1 2 auto --compete 0 1

For each number of competing jobs (each a Python busy loop that keeps one CPU busy, started two
seconds before the measurements and stopped after them), every thread setting is timed by
``memory_time.py``'s timing process: a fresh process per setting, median of ``--steps`` steps
after ``--warmup``. ``auto`` is the count training chooses by default
(:func:`spikeguide.training.threads.choose_threads`, with ``OMP_NUM_THREADS`` cleared), chosen
inside that process while the competing jobs run; the table shows the count it chose. The
machine line gives torch's default thread count here. Run it on an otherwise idle machine: the
competing jobs are the load it measures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

from common import machine
from memory_time import markdown, run_child

BUSY_LOOP = "while True: pass"


def time_settings(args: argparse.Namespace, competitors: int) -> list[dict]:
    jobs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(competitors)]
    try:
        time.sleep(2 if jobs else 0)
        rows = []
        for threads in args.threads:
            child = argparse.Namespace(**{**vars(args), "threads": threads})
            (row,) = run_child(child, [args.method], args.T, "time")
            rows.append({**row, "setting": threads, "competitors": competitors})
        return rows
    finally:
        for job in jobs:
            job.terminate()
            job.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="ratebp")
    p.add_argument("--model", default="resnet19")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--threads", nargs="+", default=["1", "2", "auto"],
                   help="thread settings: counts or 'auto' (default: 1 2 auto)")
    p.add_argument("--compete", type=int, nargs="+", default=[0, 1],
                   help="numbers of competing busy jobs (default: 0 1)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    args.device, args.conv_steps = "cpu", None  # what memory_time's children take
    os.environ.pop("OMP_NUM_THREADS", None)  # else 'auto' would take it, as training does
    print(f"{args.method}, {args.model} width {args.width:g}, batch {args.batch}, T={args.T}, "
          f"cpu; median of {args.steps} steps after {args.warmup}")
    print(f"machine: {machine(torch.device('cpu'))}; {len(os.sched_getaffinity(0))} CPUs usable "
          f"by this process; load average before: {os.getloadavg()[0]:.2f}")
    by = {(r["setting"], r["competitors"]): r for n in args.compete for r in time_settings(args, n)}

    def cell(setting: str, n: int) -> str:
        r = by[setting, n]
        chosen = f" ({r['threads']} thread(s))" if setting == "auto" else ""
        return f"{r['step_s']:.3f}{chosen}"

    print(markdown(["threads"] + [f"s/step, {n} competing job(s)" for n in args.compete],
                   [[s] + [cell(s, n) for n in args.compete] for s in args.threads]))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
