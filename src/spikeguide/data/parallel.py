"""Decoding many files in worker processes."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

from ..machine import usable_cpus

A = TypeVar("A")
R = TypeVar("R")


def parallel_imap(fn: Callable[[A], R], items: Sequence[A], workers: int | None) -> Iterator[R]:
    """``fn`` over ``items`` in order, in ``workers`` processes (default: the CPUs this process
    may use, :func:`spikeguide.machine.usable_cpus`).

    Results arrive lazily, so a caller filling a preallocated array never holds them all.
    ``fn`` must be a module-level function; with ``workers <= 1`` it runs in this process.
    """
    workers = usable_cpus() if workers is None else workers
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    # fork on Linux: workers start in milliseconds and only run NumPy/Pillow code, never torch ops
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    chunksize = max(1, len(items) // (workers * 16))
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(fn, items, chunksize=chunksize)
