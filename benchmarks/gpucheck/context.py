"""What every section gets: the device, the sizes to run at, folders, the data, earlier results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .dataset import CifarJpeg
from .results import SectionResult


@dataclass(frozen=True)
class Network:
    """A network trained with random 32x32 images in the speed and memory sections."""

    model: str
    width: float
    batch: int
    T: int

    def label(self) -> str:
        return f"{self.model} width {self.width:g}, batch {self.batch}, T={self.T}"


@dataclass(frozen=True)
class Sizes:
    neuron_shape: tuple[int, ...]  # one step of the neuron checks' currents
    model_check: Network  # whole-model gradient and bf16 checks
    speed_networks: tuple[Network, ...]
    speed_rounds: int
    speed_max_iters: int
    layer: tuple[int, int]  # [T, N] of the one-layer timing
    memory_network: Network  # T is replaced by each of memory_T
    memory_T: tuple[int, ...]
    memory_max_steps: int
    profile_T: int  # the profiler section's T (the memory network's other sizes)
    train_width: float
    train_batch: int
    eval_batch: int
    max_epochs: int


# The sizes: resnet19 at full width, batch 128, T = 4, resnet20, T = 2, and
# Spikformer-4-384 at T = 4 (against SpikingJelly's own Spikformer); the memory
# table at the rate-BP recipes' size (resnet19, batch 128)
FULL = Sizes(
    neuron_shape=(16, 32, 8, 8),
    model_check=Network("resnet20", 0.25, 16, 3),
    speed_networks=(Network("resnet19", 1.0, 128, 4), Network("resnet20", 1.0, 128, 2),
                    Network("spikformer", 1.0, 128, 4)),  # width 1: Spikformer-4-384
    speed_rounds=3, speed_max_iters=10,
    layer=(4, 1 << 22),
    memory_network=Network("resnet19", 1.0, 128, 1), memory_T=(1, 2, 4, 8), memory_max_steps=5,
    profile_T=4,
    train_width=1.0, train_batch=128, eval_batch=1000, max_epochs=200,
)
# every code path at sizes a 2-core CPU runs in seconds
SMOKE = Sizes(
    neuron_shape=(4, 8, 8, 8),
    model_check=Network("resnet20", 0.0625, 2, 2),
    speed_networks=(Network("resnet20", 0.0625, 4, 2), Network("spikformer", 0.0625, 4, 2)),
    speed_rounds=1, speed_max_iters=1,
    layer=(2, 4096),
    memory_network=Network("resnet19", 0.0625, 4, 1), memory_T=(1, 2), memory_max_steps=1,
    profile_T=2,
    train_width=0.0625, train_batch=16, eval_batch=32, max_epochs=1,
)


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    smoke: bool
    work: Path  # scratch: unpacked data, caches, training runs
    out: Path  # what comes back: gpu.md, gpu_check.json, the log, training metrics
    data: CifarJpeg
    script: Path  # gpu_check.py, for child processes
    results: dict[str, SectionResult] = field(default_factory=dict)
