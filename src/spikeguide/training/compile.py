"""``train.compile``: the training step under ``torch.compile``.

The neurons' fused kernels are ``torch.library`` custom ops with fake implementations
(:mod:`spikeguide.neurons.kernels.ops`), so ``torch.compile`` traces every neuron backend without
a graph break; what the method's step does around them (hooks, Python-side bookkeeping) may still
break its graph, which costs speed, not correctness.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger("spikeguide")

# "default" is torch.compile's own default mode; the others are its named modes
COMPILE_MODES = ("none", "default", "max-autotune", "reduce-overhead")


def compile_engine(engine: nn.Module, mode: str) -> nn.Module:
    """``engine`` (the method, or its DDP wrapper) compiled with ``mode``; itself for ``"none"``."""
    if mode == "none":
        return engine
    log.info("train.compile = %s: the step runs under torch.compile; the first steps compile "
             "(minutes on CPU), later ones run the compiled code", mode)
    return torch.compile(engine, mode=mode)
