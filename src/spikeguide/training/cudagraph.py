"""``train.cuda_graph``: the training step captured once as a CUDA graph and replayed every step.

A replay launches the whole step (forward, backward, gradient clipping, optimizer update and the
meter's device sums) at once instead of kernel by kernel, which is what bounds small networks.
What stays outside the graph, on the host: loading and augmenting the batch (copied into the
graph's fixed input tensors; ``drop_last`` keeps every batch the same shape) and the learning-rate
schedule, whose value is written into a device tensor the captured optimizer reads.

NOT YET RUN ON A GPU. :class:`GraphedStep` follows PyTorch's recipe for capturing a whole network
(warm-up steps on a side stream, then capture), but this project has not run it on hardware; the
decision (:func:`graph_blocker`, :func:`use_cuda_graph`) is tested on CPU (docs/speed.md).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import nn

from ..errors import SpikeguideError
from ..neurons import is_spiking, missing_piece
from .distributed import DistInfo

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("spikeguide")

CUDA_GRAPH = ("auto", "true", "false")
WARMUP_STEPS = 3  # eager steps before the capture: lazy state (momentum, kernel builds) exists
GRAPH_OPTIMIZERS = (torch.optim.SGD, torch.optim.AdamW)


def graph_blocker(cfg: Config, device: torch.device, model: nn.Module, dist: DistInfo,
                  optimizer: torch.optim.Optimizer) -> str | None:
    """Why this run's training step cannot be captured, in a few words; None if it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device and this run trains on {device.type}"
    if dist.enabled:
        return "not with several processes (DDP's gradient all-reduce is not captured here)"
    if cfg.train.on_nonfinite == "skip":
        return "train.on_nonfinite = skip reads every step's loss on the host"
    if cfg.train.amp == "fp16":
        return "fp16's loss scaler reads its scale on the host every step"
    if not isinstance(optimizer, GRAPH_OPTIMIZERS):
        return f"the optimizer {type(optimizer).__name__} has no capturable form here"
    for name, m in model.named_modules():
        if (is_spiking(m) and m.backend != "torch" and not missing_piece(type(m), "kernel_spec")
                and isinstance(m.kernel_spec()[0], torch.Tensor)):
            return (f"the neuron {name} ({type(m).__name__}) hands its learnable decay to the "
                    "fused kernels as a number read on the host (neuron.backend = 'torch' "
                    "avoids it)")
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None:
            return (f"the batch norm {name} has momentum None (torch reads its batch count on "
                    "the host)")
    return None


def use_cuda_graph(cfg: Config, device: torch.device, model: nn.Module, dist: DistInfo,
                   optimizer: torch.optim.Optimizer) -> bool:
    """Whether to capture the step, as ``train.cuda_graph`` asks and the run allows; one line
    in the log says why not. ``true`` on a machine without CUDA is a one-line error."""
    setting = cfg.train.cuda_graph
    if setting == "false":
        return False
    if setting == "true" and device.type != "cuda":
        raise SpikeguideError(f"train.cuda_graph = true needs a CUDA device; this run trains on "
                              f"{device.type}: set it to auto or false")
    why = graph_blocker(cfg, device, model, dist, optimizer)
    if why is not None:
        log.info("train.cuda_graph = %s: the step runs without a CUDA graph: %s", setting, why)
        return False
    log.info("train.cuda_graph = %s: the training step is captured as a CUDA graph after %d "
             "eager steps", setting, WARMUP_STEPS)
    return True


class GraphedStep:
    """Runs ``step(x, y)`` (everything after augmentation; in-place device updates only) eagerly
    on a side stream for :data:`WARMUP_STEPS` steps, then captures it once and replays it.

    The optimizer reads its learning rate from device tensors during these steps, refilled from
    the schedule's host value before each one; SGD runs fused and AdamW capturable, as capture
    needs. Untested on hardware (see the module docstring).
    """

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], None],
                 optimizer: torch.optim.Optimizer):
        self.step, self.optimizer = step, optimizer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.lr: list[torch.Tensor] = []
        self.eager_steps = 0

    def _make_capturable(self, device: torch.device) -> None:
        """Called at the first step, after a resume has loaded the optimizer's state."""
        for group in self.optimizer.param_groups:
            if isinstance(self.optimizer, torch.optim.SGD):
                group["fused"], group["foreach"] = True, False
            else:
                group["capturable"] = True
        for state in self.optimizer.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device, torch.float32)
        self.lr = [torch.tensor(float(g["lr"]), device=device) for g in self.optimizer.param_groups]

    @contextmanager
    def _tensor_lr(self) -> Iterator[None]:
        groups = self.optimizer.param_groups
        rates = [g["lr"] for g in groups]
        for group, rate, tensor in zip(groups, rates, self.lr):
            tensor.fill_(rate)
            group["lr"] = tensor
        try:
            yield
        finally:  # the schedule and the checkpoint keep seeing numbers
            for group, rate in zip(groups, rates):
                group["lr"] = rate

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.inputs is None:
            self._make_capturable(x.device)
            self.inputs = (x.clone(), y.clone())
        else:
            self.inputs[0].copy_(x)
            self.inputs[1].copy_(y)
        with self._tensor_lr():
            if self.eager_steps < WARMUP_STEPS:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self.step(*self.inputs)
                torch.cuda.current_stream().wait_stream(side)
                self.eager_steps += 1
                return
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.step(*self.inputs)
            self.graph.replay()
