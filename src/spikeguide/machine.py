"""What this machine offers a run: memory, CPUs (and which are idle), the processes sharing them.

Read by the loader choice and the streaming loader (``data/``) and by the thread choice
(``training/threads.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")
SAMPLE_SECONDS = 0.2  # long enough for /proc/stat's 10 ms ticks, short beside a training
# cgroup v2, then v1: a container's memory limit, lower than the machine's RAM
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"),
                 Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def ram_bytes() -> int:
    """Physical memory, or the container's limit where that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def gpu_bytes(device: torch.device) -> int | None:
    """Memory of the training GPU, or None when training on the CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory


def local_processes() -> int:
    """Training processes of this run on this machine (torchrun sets ``LOCAL_WORLD_SIZE``)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def affinity_cpus() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """Whole CPUs this process may use: its affinity, capped by a container's CPU quota."""
    quota = cgroup_cpu_limit()
    cpus = len(affinity_cpus())
    return max(1, int(min(cpus, quota)) if quota is not None else cpus)


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
