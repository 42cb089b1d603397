"""How many threads torch computes with: the CPUs that are free to this process.

torch starts one thread per core of the machine. Where other jobs keep some of those cores busy,
its threads wait on each other at every parallel operation: on a shared 2-core machine two threads
made a training step about 14 times slower than one (``docs/enof.md``). Training therefore picks
the thread count once, when it starts (:func:`choose_threads`):

1. ``train.threads`` when it is set (> 0), else ``OMP_NUM_THREADS`` when it is set;
2. else the CPUs this process may run on (its CPU affinity, capped by the cgroup CPU quota of a
   container) that are idle now: each CPU's idle share over a short sample of ``/proc/stat``,
   summed, a CPU counting when at least 3/4 idle; shared evenly between the processes of a
   data-parallel run on this machine; at least one.

A job that starts on the same cores later is not seen: on a machine others share, setting
``train.threads = 1`` is the safe choice.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("spikeguide")

CGROUP_ROOT = Path("/sys/fs/cgroup")
SAMPLE_SECONDS = 0.2  # long enough for /proc/stat's 10 ms ticks, short beside a training
IDLE_SLACK = 0.25  # a CPU at least 75% idle counts as free


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, membership: str | None = None) -> float | None:
    """The tightest CPU quota (in CPUs) of this process's cgroup v2 and its parents; None when
    there is none or cgroup v2 is not mounted."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    # cgroup v2: the line "0::/path"
    path = next((line[3:].strip() for line in membership.splitlines() if line.startswith("0::")),
                None)
    if path is None:
        return None
    limits = []
    folder = root / path.lstrip("/")
    for level in (folder, *folder.parents):
        try:
            quota, period = (level / "cpu.max").read_text().split()
        except (OSError, ValueError):
            quota = "max"
        if quota != "max":
            limits.append(int(quota) / int(period))
        if level == root:
            break
    return min(limits, default=None)


def read_cpu_times(cpus: list[int], stat: str | None = None) -> dict[int, tuple[int, int]]:
    """(idle, total) clock ticks of each of ``cpus`` from ``/proc/stat``."""
    if stat is None:
        stat = Path("/proc/stat").read_text()
    times = {}
    for line in stat.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return times


def idle_cpus(cpus: list[int], seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many of ``cpus`` were idle over the next ``seconds`` (summed idle shares); None where
    ``/proc/stat`` cannot be read."""
    try:
        before = read_cpu_times(cpus)
        time.sleep(seconds)
        after = read_cpu_times(cpus)
    except (OSError, ValueError):
        return None
    idle = 0.0
    for cpu, (idle0, total0) in before.items():
        idle1, total1 = after.get(cpu, (idle0, total0))
        idle += (idle1 - idle0) / (total1 - total0) if total1 > total0 else 1.0
    return idle


def local_processes() -> int:
    """Processes of this run on this machine (torchrun sets ``LOCAL_WORLD_SIZE``)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def choose_threads(requested: int = 0) -> ThreadChoice:
    """The thread count for this process and why (see the module docstring)."""
    if requested > 0:
        return ThreadChoice(requested, "train.threads")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), "OMP_NUM_THREADS")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    usable, why = float(len(cpus)), [f"{len(cpus)} CPU(s) in this process's affinity"]
    quota = cgroup_cpu_limit()
    if quota is not None and quota < usable:
        usable = quota
        why.append(f"a cgroup quota of {quota:g} CPU(s)")
    idle = idle_cpus(cpus) if usable >= 2 else None
    if idle is not None:
        usable = min(usable, idle + IDLE_SLACK)
        why.append(f"{idle:.1f} of them idle")
    processes = local_processes()
    if processes > 1:
        usable /= processes
        why.append(f"shared by {processes} processes")
    return ThreadChoice(max(1, math.floor(usable)), ", ".join(why))


def set_threads(requested: int = 0) -> ThreadChoice:
    """Choose the thread count, set it for torch and log the choice."""
    choice = choose_threads(requested)
    torch.set_num_threads(choice.threads)
    log.info("torch threads: %d (%s)", choice.threads, choice.reason)
    return choice
