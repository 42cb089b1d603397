"""The GPU path proven in one command: kernels, speed and memory against SpikingJelly, training.

Sections, in the order they run (each has a share of ``--budget``; work that does not fit is
listed as left out for lack of time; time a section leaves goes to the training, which runs last):

1. environment: GPU, driver, torch, Triton and SpikingJelly versions;
2. correctness: every GPU backend (``fused``, ``triton``) and the rate-BP recording against the
   ``torch`` reference (``gpucheck/correctness.py`` states the tolerances);
3. speed: training steps of resnet19 (batch 128, T = 4) and resnet20 (T = 2) at full width,
   spikeguide's backends (and ``auto`` under ``torch.compile`` on resnet19) against SpikingJelly
   2.0.0 (bf16 through its precision API), fp32 and bf16 autocast, channels_last on and off,
   achieved TFLOP/s against a bf16 matrix-multiply ceiling measured in the run; one LIF layer
   alone;
4. memory: peak memory and step time of bptt, ratebp and hybrid at T = 1, 2, 4, 8;
5. profile: ``torch.profiler``'s top operators and kernels of a ratebp, hybrid and bptt step;
6. input pipeline: decoding the CIFAR-10 JPEG copy, images/s of both loaders;
7. training: recipes/fast/ (EnOF resnet20 T = 4, teacher then student) within train.time_budget.

First steps (kernel builds, autotuning, compilation) are timed apart from the timed steps. The
default budget (450 s) keeps the whole check, start-up and data unpacking included, within
9 minutes. Every run's header records the commit and the device.

It writes ``gpu.md``, ``gpu_check.json``, ``gpu_check.log`` and the training runs' ``metrics.jsonl``
into ``--out`` and prints the summary and the recommended ``auto`` backend last. Exit status 1
when a check failed or a section raised.

On a GPU machine, from the repository root (``results/gpu.md`` gives the device command):

    PYTHONPATH=src python benchmarks/gpu_check.py --data cifar10-jpeg-q75.tar.gz --out OUT

On any machine, every code path at tiny sizes on CPU (run by tests/test_gpu_check.py):

    PYTHONPATH=src python benchmarks/gpu_check.py --smoke --out OUT
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TextIO

import torch

from common import machine
from gpucheck import (correctness, environment, memory, pipeline, profile, report, speed,
                      training)
from gpucheck.context import FULL, SMOKE, Context
from gpucheck.dataset import CifarJpeg, write_tiny_tarball
from gpucheck.recommend import recommend_auto, recording_line
from gpucheck.results import SectionResult
from gpucheck.timebox import Clock, TimeBox
from spikeguide.errors import SpikeguideError
from spikeguide.neurons.kernels import resolve_backend

# key: (title, share of the budget or None for what is left, runner), in the order they run;
# the pipeline decodes the data the training then reuses
SECTIONS: dict[str, tuple[str, float | None, Callable]] = {
    "environment": ("1. Environment", 0.01, environment.run),
    "correctness": ("2. Correctness on the device", 0.17, correctness.run),
    "speed": ("3. Speed against SpikingJelly", 0.24, speed.run),
    "memory": ("4. Memory and time of a step", 0.10, memory.run),
    "profile": ("5. Profile of rate-BP and hybrid steps", 0.06, profile.run),
    "pipeline": ("6. Input pipeline", 0.05, pipeline.run),
    "training": ("7. Training on CIFAR-10", None, training.run),
}
RESERVE_S = 10.0  # kept at the end for writing the results
OUTPUTS = ("gpu.md", "gpu_check.json", "gpu_check.log", *training.METRICS_FILES)


class Tee:
    """Writes to the console and the log file alike."""

    def __init__(self, stream: TextIO, log: TextIO):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="every section at tiny sizes on CPU, on a generated image tree")
    p.add_argument("--data", type=Path,
                   help="the packed CIFAR-10 JPEG copy (cifar10-jpeg-q75.tar.gz) or its unpacked "
                        "folder")
    p.add_argument("--out", type=Path, default=Path("gpu_check_out"),
                   help="folder for gpu.md, gpu_check.json, the log and the training metrics "
                        "(an earlier check's files there are replaced)")
    p.add_argument("--work", type=Path,
                   help="scratch folder: unpacked data, caches, runs (default: a temporary one)")
    p.add_argument("--budget", type=float, default=450.0,
                   help="seconds for the whole check, data unpacking and kernel builds included")
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS),
                   help="run only these (a rerun of what failed, say)")
    p.add_argument("--sj-child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def choose_device(args: argparse.Namespace) -> torch.device:
    if args.smoke:
        # the Triton kernels then run in Triton's CPU interpreter (set before Triton is imported)
        os.environ.setdefault("TRITON_INTERPRET", "1")
        # what auto runs on CPU is built now, once per machine, not inside a section's time
        resolve_backend("auto", torch.zeros(1))
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SpikeguideError("no CUDA device here: run it on a GPU machine, or with --smoke")
    if args.data is None:
        raise SpikeguideError("pass --data with the packed CIFAR-10 JPEG copy "
                              "(cifar10-jpeg-q75.tar.gz) or its unpacked folder")
    return torch.device("cuda")


def device_header(device: torch.device) -> str:
    """The device's line of every run's header: GPU, driver, CUDA and cuDNN (on CPU, the CPU)."""
    if device.type != "cuda":
        return machine(device)
    return "; ".join(f"{what}: {value}" for what, value in environment.gpu_rows(device)[:3])


def run_section(ctx: Context, clock: Clock, result: SectionResult) -> None:
    _, share, runner = SECTIONS[result.key]
    reserve = 0.0 if ctx.smoke else RESERVE_S
    seconds = clock.left() - reserve if share is None else share * (clock.deadline - clock.start)
    box = TimeBox(clock, seconds, result, reserve)
    print(f"\n===== {result.title} ({box.left():.0f} s) =====", flush=True)
    start = time.monotonic()
    try:
        runner(ctx, box, result)
    except Exception as err:  # one section failing leaves the others to run
        traceback.print_exc()
        result.error = f"{type(err).__name__}: {err}"[:500]
    finally:
        result.seconds = time.monotonic() - start
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.sj_child:
        print(json.dumps(speed.child_main(json.loads(args.sj_child))))
        return 0
    try:
        device = choose_device(args)
    except SpikeguideError as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (args.out / name).unlink(missing_ok=True)
    log = open(args.out / "gpu_check.log", "w")
    sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        return check(args, device, work, "python benchmarks/gpu_check.py " + shlex.join(argv))
    except SpikeguideError as err:  # a mistake in the command line, found before any section
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        log.close()


def check(args: argparse.Namespace, device: torch.device, work: Path, command: str) -> int:
    clock = Clock(args.budget)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    work.mkdir(parents=True, exist_ok=True)
    data = args.data or write_tiny_tarball(work / "tiny-cifar10-jpeg.tar.gz")
    ctx = Context(device=device, sizes=SMOKE if args.smoke else FULL, smoke=args.smoke, work=work,
                  out=args.out, data=CifarJpeg(data.resolve(), work),
                  script=Path(__file__).resolve())
    results = []
    try:
        for key, (title, _, _) in SECTIONS.items():
            if key in args.sections:
                result = ctx.results[key] = SectionResult(key, title)
                run_section(ctx, clock, result)
                results.append(result)
    finally:
        ctx.data.close()
    # the smoke run's CPU stands in for a GPU, where auto runs 'fused' today
    today = (resolve_backend("auto", torch.empty(0, device=device)) if device.type == "cuda"
             else "fused")
    correctness = ctx.results["correctness"].data if "correctness" in ctx.results else {}
    recommendation = recommend_auto(
        ctx.results["speed"].data.get("groups", []) if "speed" in ctx.results else [],
        correctness.get("failed", []), today)
    recommendation["lines"].append(recording_line(device, correctness))
    header = {"machine": machine(device), "device": device_header(device),
              "commit": environment.command_output("git", "describe", "--always", "--dirty",
                                                   cwd=ctx.script.parent) or "unknown",
              "command": command,
              "started": started, "elapsed_s": clock.elapsed(), "budget_s": args.budget,
              "smoke": args.smoke}
    print()
    report.write(args.out, header, results, recommendation)
    print("\n" + "\n".join(recommendation["lines"]))
    print(f"\nwritten: {', '.join(sorted(p.name for p in args.out.iterdir()))} in {args.out}")
    return int(any(r.status in ("failed", "error") for r in results))


if __name__ == "__main__":
    sys.exit(main())
