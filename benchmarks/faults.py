"""Fault injection: each fault of issue 22 injected into a small CPU run, and what it cost.

    python benchmarks/faults.py [--quick] [--work DIR] [--seed 0]

Every run is the ``spikeguide train`` command in processes of its own (one torch thread each):
ResNet-20 at 1/16 width on 8x8 digits (640 training images, batches of 64, one epoch of 10
steps, a checkpoint every 2 steps), or on a generated folder of PNG images with the streaming loader. Faults are
injected from a ``sitecustomize`` module that the runs import (environment variables say which
fault, where; ``fault_injection.py``). A fault is survived when the run either ends as it should or stops with one clear
line (exit code 2) and then, rerun with ``--resume auto``, ends as it should. What was lost is
judged against an uninterrupted run of the same recipe: the final weights must be bit-identical
where the fault is a kill, a stop or a restart; where the run must refuse (a checkpoint of
another model, an edited recipe), the run directory must be byte-for-byte untouched. ``--quick``
runs the fast subset (the default test suite runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tomli_w
import torch
from PIL import Image

from common import cpu_name, load_average

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
BENCHMARKS = str(ROOT / "benchmarks")

# every process the runs start imports this, and fault_injection.py injects what the environment asks
SITECUSTOMIZE = "import fault_injection\nfault_injection.inject()\n"


@dataclass
class Result:
    fault: str
    injected: str
    outcome: str  # what the run did
    lost: str  # what was lost against the uninterrupted run
    ok: bool


class Bench:
    """The work folder, the recipes and the runs of one benchmark."""

    def __init__(self, work: Path, seed: int):
        self.work, self.rng = work, random.Random(seed)
        (work / "site").mkdir(parents=True, exist_ok=True)
        (work / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.references: dict[tuple, dict] = {}

    def recipe(self, name: str, **sections) -> Path:
        cfg = {"name": name, "out_dir": str(self.work / "runs"),
               "model": {"name": "resnet20", "width": 0.0625, "T": 2},
               "data": {"name": "digits", "batch_size": 64, "train_subset": 640,
                        "test_subset": 128, "options": {"size": 8},
                        "augment": {"crop_padding": 1, "flip": False}},
               "optim": {"lr": 0.05},
               "train": {"epochs": 1, "checkpoint_every": 2, "progress": False}}
        for key, value in sections.items():  # a None drops the field
            cfg[key] = {k: v for k, v in {**cfg.get(key, {}), **value}.items() if v is not None}
        path = self.work / f"{name}.toml"
        path.write_text(tomli_w.dumps(cfg))
        return path

    def run_dir(self, recipe: Path) -> Path:
        return self.work / "runs" / recipe.stem

    def env(self, **faults: str) -> dict[str, str]:
        return {**os.environ, "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(self.work / "site"), BENCHMARKS, SRC]),
                **faults}

    def start(self, recipe: Path, *args: str, **faults: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "spikeguide", "train", str(recipe), *args],
                                env=self.env(**faults), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def train(self, recipe: Path, *args: str, **faults: str) -> subprocess.CompletedProcess:
        proc = self.start(recipe, *args, **faults)
        out, err = proc.communicate(timeout=600)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def weights(self, recipe: Path) -> dict:
        return torch.load(self.run_dir(recipe) / "latest.pt", weights_only=True)["model"]

    def reference(self, recipe: Path, *args: str) -> dict:
        """The final weights of ``recipe`` trained without a fault (once per config and
        command: recipes that differ in their name alone share it)."""
        name = f'name = "{recipe.stem}"'
        key = (recipe.read_text().replace(name, ""), args)
        if key not in self.references:
            ref = recipe.with_name(f"{recipe.stem}_ref.toml")
            ref.write_text(recipe.read_text().replace(name, f'name = "{recipe.stem}_ref"'))
            done = self.train(ref, "--overwrite", *args)
            if done.returncode != 0:
                raise RuntimeError(f"the reference run of {recipe.stem} failed: "
                                   f"{done.stderr[-2000:]}")
            self.references[key] = self.weights(ref)
        return self.references[key]

    def lost(self, recipe: Path, *args: str) -> str:
        """``nothing`` when the run's final weights equal the uninterrupted run's."""
        a, b = self.weights(recipe), self.reference(recipe, *args)
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        return "nothing (bit-identical)" if same else "final weights differ"


def one_line(stderr: str) -> str | None:
    """The error line of a run that stopped with exit code 2, if it is the only one."""
    errors = [ln for ln in stderr.splitlines() if ln.startswith("spikeguide: error:")]
    return errors[0] if len(errors) == 1 and "Traceback" not in stderr else None


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def resumed(b: Bench, recipe: Path, stop: subprocess.CompletedProcess, fault: str,
            injected: str, *args: str) -> Result:
    """A run that had to stop with one line: resumed with ``--resume auto``, then compared."""
    line = one_line(stop.stderr)
    if stop.returncode != 2 or line is None:
        return Result(fault, injected, f"exit {stop.returncode}, no one-line error", "?", False)
    done = b.train(recipe, "--resume", "auto", *args)
    if done.returncode != 0:
        return Result(fault, injected, f"{line[:60]}...; the resume failed", "?", False)
    lost = b.lost(recipe, *args)
    return Result(fault, injected, f"stopped: `{line[19:90]}...`; `--resume auto` finished", lost,
                  lost.startswith("nothing"))


# ------------------------------------------------------------------------------- the faults


def rank_kills(b: Bench) -> Result:
    recipe = b.recipe("kills")
    steps = sorted(b.rng.sample(range(2, 10), 3))
    plan = ",".join(f"{b.rng.randrange(2)}:{s}" for s in steps)
    done = b.train(recipe, "--nproc", "2", "--max-restarts", "3", "--overwrite",
                   FAULT_KILL_RANK=plan)
    injected = f"SIGKILL of rank:step {plan.replace(',', ', ')} (2 gloo processes)"
    restarts = done.stderr.count("worker group restart")
    if done.returncode != 0:
        return Result("rank killed, several times", injected,
                      f"exit {done.returncode} after {restarts} restarts", "?", False)
    lost = b.lost(recipe, "--nproc", "2")
    return Result("rank killed, several times", injected,
                  f"{restarts} group restarts, each from the last checkpoint; finished", lost,
                  lost.startswith("nothing"))


def sigterm(b: Bench) -> Result:
    # five epochs: one is over in about a second on idle cores, before the signal could land
    recipe = b.recipe("sigterm", train={"epochs": 5})
    latest = b.run_dir(recipe) / "latest.pt"
    proc = b.start(recipe, "--overwrite")
    while proc.poll() is None and not latest.exists():
        time.sleep(0.05)
    time.sleep(b.rng.uniform(0.0, 0.5))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    injected = "SIGTERM mid-run"
    if proc.returncode != 128 + signal.SIGTERM or "--resume" not in out:
        return Result("SIGTERM", injected, f"exit {proc.returncode}", "?", False)
    done = b.train(recipe, "--resume", "auto")
    lost = b.lost(recipe) if done.returncode == 0 else "the resume failed"
    return Result("SIGTERM", injected, "checkpointed, exit 143; `--resume auto` finished", lost,
                  lost.startswith("nothing"))


def corrupt_latest(b: Bench) -> Result:
    recipe = b.recipe("corrupt")
    b.train(recipe, "--overwrite", "--max-steps", "7")  # latest.pt at step 7, previous.pt at 6
    latest = b.run_dir(recipe) / "latest.pt"
    data = bytearray(latest.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(255 - x for x in data[middle:middle + 16])
    latest.write_bytes(bytes(data))
    done = b.train(recipe, "--resume", "auto")
    warned = [ln for ln in done.stderr.splitlines() if "previous checkpoint" in ln]
    names_both = len(warned) == 1 and "latest.pt" in warned[0] and "previous.pt" in warned[0]
    if done.returncode != 0 or not names_both:
        return Result("corrupted latest.pt", "16 bytes flipped mid-file",
                      f"exit {done.returncode}, fallback warning {'ok' if names_both else 'missing'}",
                      "?", False)
    lost = b.lost(recipe)
    return Result("corrupted latest.pt", "16 bytes flipped mid-file",
                  "one warning naming both files; resumed from previous.pt", lost,
                  lost.startswith("nothing"))


def nan_loss(policy: str) -> Callable[[Bench], Result]:
    def fault(b: Bench) -> Result:
        recipe = b.recipe(f"nan_{policy}",
                          train={} if policy == "stop" else {"on_nonfinite": policy})
        injected = "NaN loss at step 5"
        first = b.train(recipe, "--overwrite", FAULT_NAN="5:5")
        if policy == "stop":
            return resumed(b, recipe, first, "NaN loss, stop", injected)
        events = [ln for ln in (b.run_dir(recipe) / "metrics.jsonl").read_text().splitlines()
                  if '"event"' in ln]
        if first.returncode != 0 or len(events) != 1:
            return Result(f"NaN loss, {policy}", injected,
                          f"exit {first.returncode}, {len(events)} events", "?", False)
        lost = ("1 step skipped, recorded" if policy == "skip" else
                "none; steps 5-6 retrained at lr x 0.5, recorded")
        return Result(f"NaN loss, {policy}", injected,
                      "finished; 1 event in metrics.jsonl and the log", lost, True)
    fault.__name__ = f"nan_{policy}"
    return fault


def full_disk(b: Bench) -> Result:
    recipe = b.recipe("disk")
    # the 4th checkpoint write fails after 4 KiB: latest.pt (step 6) and previous.pt must stay
    stop = b.train(recipe, "--overwrite", FAULT_FULL_DISK="4")
    before = {k: v for k, v in snapshot(b.run_dir(recipe)).items() if k.endswith(".pt")}
    result = resumed(b, recipe, stop, "full disk during a save",
                     "ENOSPC 4 KiB into the 4th checkpoint write")
    if result.ok and sorted(before) != ["latest.pt", "previous.pt"]:
        result.ok, result.lost = False, f"checkpoints after the failure: {sorted(before)}"
    return result


def image_folder(root: Path, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 4)):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
                pixels[..., c] = 255
                Image.fromarray(pixels).resize((12, 12)).save(folder / f"{i}.png")
    return root


def stream_recipe(b: Bench, name: str, root: Path, **data) -> Path:
    return b.recipe(name, data={"name": "imagefolder", "root": str(root), "batch_size": 8,
                                "loader": "stream", "train_subset": None, "test_subset": None,
                                "options": {"resize": 10, "crop": 8, "workers": 1, **data}})


def stream_worker_dies(b: Bench) -> Result:
    recipe = stream_recipe(b, "worker", image_folder(b.work / "images", 16))
    flag = b.work / "worker_killed"
    flag.unlink(missing_ok=True)
    stop = b.train(recipe, "--overwrite", FAULT_KILL_WORKER=str(flag))
    return resumed(b, recipe, stop, "streaming worker dies", "SIGKILL of a decode worker")


def corrupt_images(b: Bench) -> Result:
    root = image_folder(b.work / "broken", 16)
    (root / "train" / "class1" / "3.png").write_bytes(b"not an image at all")
    png = root / "train" / "class2" / "5.png"
    png.write_bytes(png.read_bytes()[:40])
    recipe = stream_recipe(b, "broken", root, skip_corrupt=True)
    done = b.train(recipe, "--overwrite")
    named = [ln for ln in done.stderr.splitlines() if ln.startswith("skip_corrupt:")]
    ok = done.returncode == 0 and len(named) == 2
    return Result("corrupt and truncated images", "a garbage file and a PNG cut at 40 bytes",
                  f"exit {done.returncode}; {len(named)} warnings naming the files",
                  "2 images replaced by the next readable ones (named)" if ok else "?", ok)


def must_refuse(b: Bench, recipe: Path, fault: str, injected: str, *args: str) -> Result:
    before = snapshot(b.run_dir(recipe))
    done = b.train(recipe, *args)
    line = one_line(done.stderr)
    untouched = snapshot(b.run_dir(recipe)) == before
    ok = done.returncode == 2 and line is not None and untouched
    outcome = (f"refused: `{line[19:90]}...`" if line else
               f"exit {done.returncode}, no one-line error")
    return Result(fault, injected, outcome,
                  "nothing; run directory untouched" if untouched else "run directory changed", ok)


def foreign_checkpoint(b: Bench) -> Result:
    recipe = b.recipe("foreign")
    other = b.recipe("other", model={"width": 0.125})
    b.train(other, "--overwrite", "--max-steps", "2")
    b.run_dir(recipe).mkdir(parents=True, exist_ok=True)
    (b.run_dir(recipe) / "latest.pt").write_bytes((b.run_dir(other) / "latest.pt").read_bytes())
    return must_refuse(b, recipe, "checkpoint of another model",
                       "latest.pt of a 2x wider ResNet-20", "--resume", "auto")


def recipe_edited(b: Bench) -> Result:
    recipe = b.recipe("edited")
    b.train(recipe, "--overwrite", "--max-steps", "3")
    recipe.write_text(recipe.read_text().replace("lr = 0.05", "lr = 0.1"))
    return must_refuse(b, recipe, "recipe edited before resume", "optim.lr 0.05 -> 0.1",
                       "--resume", "auto")


FAULTS = [rank_kills, sigterm, corrupt_latest, nan_loss("stop"), nan_loss("skip"),
          nan_loss("rollback"), full_disk, stream_worker_dies, corrupt_images,
          foreign_checkpoint, recipe_edited]
QUICK = [corrupt_latest, foreign_checkpoint]


def markdown(results: list[Result]) -> str:
    rows = ["| fault | injected | outcome | lost | survived |", "|---|---|---|---|---|"]
    rows += [f"| {r.fault} | {r.injected} | {r.outcome} | {r.lost} | {'yes' if r.ok else 'NO'} |"
             for r in results]
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the fast subset (the test suite's)")
    p.add_argument("--work", default="runs/faults_bench", help="scratch folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="draws the kill steps and times")
    p.add_argument("--only", nargs="+", choices=[f.__name__ for f in FAULTS], default=None,
                   metavar="FAULT", help="these faults alone (default: all, or the quick subset)")
    args = p.parse_args()
    bench = Bench(Path(args.work).resolve(), args.seed)
    start, load = time.time(), load_average()
    results = []
    chosen = [f for f in FAULTS if f.__name__ in args.only] if args.only else None
    for fault in chosen or (QUICK if args.quick else FAULTS):
        t0 = time.time()
        results.append(fault(bench))
        print(f"{fault.__name__}: {'ok' if results[-1].ok else 'FAILED'} "
              f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    survived = sum(r.ok for r in results)
    print(markdown(results))
    print(f"\nfaults survived: {survived} / {len(results)}; {time.time() - start:.0f} s on "
          f"{cpu_name()}, {os.cpu_count()} cores; load average at the start {load}, at the end "
          f"{load_average()}")
    return 0 if survived == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
