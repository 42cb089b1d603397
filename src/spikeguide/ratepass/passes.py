"""One training forward of rate-based backpropagation (Yu et al., NeurIPS 2024).

1. Spiking pass over all T steps under ``torch.no_grad()``: neurons record firing rates and
   eligibilities, batch norms record their batch statistics (and update running statistics).
2. Rate pass of one step on the time-averaged input, with autograd: every routed module returns
   its recorded time average, so the forward values are the spiking pass's time averages and the
   backward runs through a one-step graph. Nothing T-long is kept for the backward.

The rate pass input: a static image ``[B, C, H, W]`` is the same at every step, so it is the input
itself, run with ``model.T = 1`` (the encoding is broadcast over ``model.T``); event frames
``[B, T, C, H, W]`` are averaged over time into one frame ``[B, 1, C, H, W]`` (the encoder is
linear, so its output is the time average of the per-frame encodings).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from ..models import ModelOutput, SpikingNet
from .recorder import RateRecorder


def time_steps(model: SpikingNet, x: torch.Tensor) -> int:
    return model.T if x.dim() == 4 else x.shape[1]


def rate_input(x: torch.Tensor) -> torch.Tensor:
    return x if x.dim() == 4 else x.mean(1, keepdim=True)


@contextmanager
def single_step(model: SpikingNet) -> Iterator[None]:
    T = model.T
    model.T = 1
    try:
        yield
    finally:
        model.T = T


def rate_forward(model: SpikingNet, x: torch.Tensor, return_stages: bool = False) -> ModelOutput:
    """The rate pass's output (``logits_t`` and ``feature_t`` ``[1, B, ...]``, stages
    ``[1, B, C, H, W]``): time averages of the spiking pass in value, with a one-step graph."""
    recorder = RateRecorder(model)  # per call: sees the model as it is now (e.g. after RepAct)
    with torch.no_grad(), recorder.recording(time_steps(model, x)):
        model.forward_features(x)
    with recorder.replaying(), single_step(model):
        return model.forward_features(rate_input(x), return_stages)
