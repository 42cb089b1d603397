"""One training forward of rate-based backpropagation (Yu et al., NeurIPS 2024).

1. Spiking pass over all T steps under ``torch.no_grad()``: neurons record firing rates and
   eligibilities, batch norms record their batch statistics (and update running statistics).
2. Rate pass of one step on the time-averaged input, with autograd: every routed module returns
   its recorded time average, so the forward values are the spiking pass's time averages and the
   backward runs through a one-step graph. Nothing T-long is kept for the backward.

At T = 1 the rate pass's input to every layer is the spiking pass's, so one forward does both.

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


def rate_forward(model: SpikingNet, x: torch.Tensor, return_stages: bool = False,
                 conv_steps: int = 0) -> ModelOutput:
    """The rate pass's output (``logits_t`` and ``feature_t`` ``[1, B, ...]``, stages
    ``[1, B, C, H, W]``): time averages of the spiking pass in value, with a one-step graph.

    ``conv_steps``: time steps each convolution of the spiking pass runs at once (0: 1 on CPU,
    all T on CUDA; see :class:`RateRecorder`). At T = 1 both passes run as one
    (:meth:`RateRecorder.in_one_pass`): the same values and gradients for one forward less.
    """
    # per call: sees the model as it is now (e.g. after RepAct)
    recorder = RateRecorder(model, conv_steps)
    T = time_steps(model, x)
    if T == 1:
        with recorder.in_one_pass():
            return model.forward_features(x, return_stages)
    return two_passes(model, recorder, x, T, return_stages)


def two_passes(model: SpikingNet, recorder: RateRecorder, x: torch.Tensor, T: int,
               return_stages: bool = False) -> ModelOutput:
    """The spiking pass over ``T`` steps, then the rate pass (:func:`rate_forward`)."""
    with torch.no_grad(), recorder.recording(T):
        model.forward_features(x)
    with recorder.replaying(), single_step(model):
        return model.forward_features(rate_input(x), return_stages)
