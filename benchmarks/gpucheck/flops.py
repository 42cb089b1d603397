"""Achieved TFLOP/s of a training step, and the bf16 matrix-multiply ceiling to read it against.

A step's floating-point operations are counted from the shapes of its convolutions and linear
layers alone (the elementwise work of neurons, batch norm and the optimizer is left out): a
forward multiply-add is 2 FLOPs, and backward costs twice the forward (the input's and the
weights' gradients), so a step is ``6 x`` the forward multiply-adds. Under a spiking network's
time loop every layer runs on ``T x batch`` images, which the count sees.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from common import sync


def forward_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the convolutions and linear layers in one forward of ``model`` on ``x``."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * math.prod(
                module.kernel_size)
        else:
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


def step_flops(model: nn.Module, x: torch.Tensor) -> float:
    return 6.0 * forward_macs(model, x)


def matmul_ceiling(device: torch.device, n: int, repeats: int = 10) -> float:
    """TFLOP/s of the best of ``repeats`` bf16 ``[n, n] @ [n, n]`` products on ``device``."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b  # the library's first call (handles, autotuning)
    best = math.inf
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12
