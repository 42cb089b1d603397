"""Reuse of the CPU kernels' large output buffers.

A fresh CPU tensor page-faults its memory in on first write; on the virtual machines measured
here that costs several times the LIF arithmetic itself (``results/speed.md``). The pool hands a
buffer out again once every tensor made from it is gone, which it sees from the storage's use
count (the same test PyTorch's CUDA-graph trees use): spikes saved by the next layer for its
backward, for example, keep their buffer busy until that backward has run.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict

import torch

MIN_BYTES = 1 << 20  # smaller buffers come from the allocator: reuse would not pay


def _unused(buf: torch.Tensor) -> bool:
    # references: the pool's tensor, and the Python storage object made to ask
    return torch._C._storage_Use_Count(buf.untyped_storage()._cdata) <= 2


class BufferPool:
    """Hands out uninitialized CPU tensors, reusing buffers nothing references any more.

    At most ``max_bytes`` are kept; beyond that, buffers come from (and go back to) the allocator.
    """

    def __init__(self, max_bytes: int = 4 << 30):
        self.max_bytes = max_bytes
        self.held = 0
        self._buffers: dict[tuple, list[torch.Tensor]] = defaultdict(list)
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        nbytes = numel * dtype.itemsize
        if nbytes < MIN_BYTES:
            return torch.empty(shape, dtype=dtype)
        with self._lock:
            bucket = self._buffers[(numel, dtype)]
            for buf in bucket:
                if _unused(buf):
                    return buf.view(shape)
            buf = torch.empty(numel, dtype=dtype)
            if self.held + nbytes <= self.max_bytes:
                bucket.append(buf)
                self.held += nbytes
            return buf.view(shape)

    def clear(self) -> None:
        """Let go of every buffer (tensors still in use keep theirs alive)."""
        with self._lock:
            self._buffers.clear()
            self.held = 0
