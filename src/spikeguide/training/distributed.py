"""Devices and data-parallel training on PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node=N -m spikeguide train RECIPE`` starts N processes; each reads its
rank from the environment torchrun sets, takes its slice of every global batch, and DDP averages
the gradients. Only rank 0 writes files. ``spikeguide train --nproc N`` launches torchrun for you.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..errors import SpikeguideError
from ..ratepass.recorder import update_running_stats
from .workers import run_workers


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


# train.amp -> the autocast dtype (fp16 needs CUDA: its loss scaling uses CUDA's GradScaler)
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpikeguideError(f"train.device is {name!r} but CUDA is not available here")
    return device


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment (a no-op without it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """Each process on a multi-GPU machine takes the GPU of its local rank."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def barrier_if_joined() -> None:
    """A barrier where this process has joined a process group (under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: Sequence[float], info: DistInfo) -> list[float]:
    if not info.enabled:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.tolist()


def host_group(info: DistInfo) -> dist.ProcessGroup | None:
    """A process group for small host-side values (a stop request): the default group under gloo,
    a gloo group beside NCCL, whose collectives run on the GPU and are read back with a wait."""
    if not info.enabled or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def any_process(flag: bool, info: DistInfo, group: dist.ProcessGroup | None) -> bool:
    """Whether ``flag`` is set in any process: an all-reduce through ``group`` (a
    :func:`host_group`, so that it never waits for a GPU)."""
    if not info.enabled:
        return flag
    t = torch.tensor(float(flag))
    dist.all_reduce(t, group=group)
    return bool(t)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm whose statistics cover the global batch, on any device and backend.

    ``nn.SyncBatchNorm`` only runs on GPUs; this one sums the statistics with a differentiable
    all-reduce, so autograd sums the gradients of the statistics over processes too. Used for
    gloo (CPU) training; CUDA uses ``nn.SyncBatchNorm``. Takes every setting of
    ``nn.BatchNorm2d`` (momentum None, affine, track_running_stats).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([count, x.sum(dims), (x * x).sum(dims)])
        stats = _AllReduceSum.apply(stats)
        n, total, squares = stats[0], stats[1:1 + x.shape[1]], stats[1 + x.shape[1]:]
        mean = total / n
        var = squares / n - mean * mean
        with torch.no_grad():
            update_running_stats(self, mean, var, n)
        shape = (1, -1, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum,
                                    child.affine, child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, device)
    return module


# torchrun's agent keeps one store for all restarts of a group, and a restarted group can read
# the addresses the failed group left there and fail to connect (pytorch/pytorch#135712,
# #167288); without the shared store every group gets a fresh one
RESTARTABLE_RENDEZVOUS = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def check_world_size(batch_size: int, nproc: int) -> None:
    """What ``nproc`` processes need of ``data.batch_size``; the launcher checks it before they
    start."""
    if nproc < 1:
        raise SpikeguideError(f"--nproc must be >= 1, got {nproc}")
    if batch_size % nproc:
        raise SpikeguideError(f"data.batch_size {batch_size} must be divisible by "
                              f"the {nproc} processes")


def launch(nproc: int, argv: Sequence[str], max_restarts: int = 0) -> int:
    """Re-run this command under torchrun with ``nproc`` processes on this machine; a failed
    process group is restarted up to ``max_restarts`` times (``training/resume.py``)."""
    if max_restarts < 0:
        raise SpikeguideError(f"--max-restarts must be >= 0, got {max_restarts}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", f"--max-restarts={max_restarts}", "-m", "spikeguide", *argv]
    return run_workers(cmd, RESTARTABLE_RENDEZVOUS)
