"""How many threads torch computes with: the CPUs that are free to this process.

torch starts one thread per core of the machine. Where other jobs keep some of those cores busy,
its threads wait on each other at every parallel operation: on a shared 2-core machine two threads
made a training step about 14 times slower than one (``docs/enof.md``). Training therefore picks
the thread count once, when it starts (:func:`choose_threads`):

1. ``train.threads`` when it is set (> 0), else ``OMP_NUM_THREADS`` when it is set;
2. else, for a resumed run, the count it trained with; else the share a caller that divides the
   CPUs gives this process (``ablate --jobs``);
3. else the CPUs this process may use (its CPU affinity, capped by the cgroup CPU quota of a
   container), at most as many as are idle now: the idle shares of those CPUs over a short sample
   of ``/proc/stat``, summed, plus a quarter (so that 3.8 idle CPUs give 4 threads), rounded
   down; shared evenly between the processes of a data-parallel run on this machine; at least
   one.

A job that starts on the same cores later is not seen: on a machine others share, setting
``train.threads = 1`` is the safe choice.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch

from ..machine import affinity_cpus, cgroup_cpu_limit, idle_cpus, local_processes

log = logging.getLogger("spikeguide")

IDLE_SLACK = 0.25  # added to the summed idle shares before rounding down


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def choose_threads(requested: int = 0, trained_with: int | None = None,
                   share: int | None = None) -> ThreadChoice:
    """The thread count for this process and why (see the module docstring).

    ``trained_with``: the count a resumed run trained with; it is kept unless one is set
    explicitly, because the thread count changes the order of float additions, and a resumed run
    is bit-identical to an uninterrupted one only with the same count. ``share``: this process's
    share of the CPUs when a caller divides them (``ablate --jobs``), in place of the free CPUs.
    """
    if requested > 0:
        return ThreadChoice(requested, "train.threads")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), "OMP_NUM_THREADS")
    if trained_with is not None:
        return ThreadChoice(trained_with, "the count the resumed run trained with")
    if share is not None:
        return ThreadChoice(share, "this process's share of the CPUs")
    cpus = affinity_cpus()
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


def set_threads(requested: int = 0, trained_with: int | None = None,
                share: int | None = None) -> ThreadChoice:
    """Choose the thread count, set it for torch and log the choice; a resumed run that now
    takes another count than it trained with is warned that it will not be bit-identical."""
    choice = choose_threads(requested, trained_with, share)
    torch.set_num_threads(choice.threads)
    log.info("torch threads: %d (%s)", choice.threads, choice.reason)
    if trained_with is not None and choice.threads != trained_with:
        log.warning("resuming with %d torch threads (%s); the run trained with %d: floats add up "
                    "in another order, so it will not continue bit-identically", choice.threads,
                    choice.reason, trained_with)
    return choice
