"""The interface every model in the zoo shares.

A model is ``encoder -> stem -> stages -> pool -> classifier``:

* ``encoder``: the first convolution and its batch norm. A static image ``[B, C, H, W]`` is
  encoded once and broadcast over T (the same current enters the first neuron at every step);
  a temporal input ``[B, T, C, H, W]`` (event frames) is encoded at every step.
* ``stem``: the rest of the input block (activations, further convolutions, pooling).
* ``stages``: a ``ModuleList``; hybrid distillation cuts the network between stages. The
  builder declares each stage's output channels in ``stage_channels`` (as timm's
  ``feature_info``); a model that does not cannot be cut.
* ``pool``: global pooling (or flattening) to the output feature, one vector per time step; a
  ``TimeSequential`` pool may hold neurons (resnet19's hidden layer before the classifier).
* ``classifier``: a linear layer on the output feature.

Every activation inside is ``[T, B, ...]`` (see :mod:`spikeguide.models.layers`); an ANN twin uses
ReLU and T = 1. ``forward`` returns logits averaged over time, ``[B, num_classes]``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..errors import SpikeguideError
from ..neurons import is_spiking
from .layers import TimeSequential, broadcast_time, fold_apply, time_apply


@contextmanager
def in_mode(module: nn.Module, training: bool) -> Iterator[nn.Module]:
    """``module`` in training or eval mode for the block; its own mode afterwards."""
    was_training = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was_training)


@dataclass
class ModelOutput:
    """What :meth:`SpikingNet.forward_features` returns.

    ``logits_t`` ``[T, B, K]`` and ``feature_t`` ``[T, B, D]`` hold one entry per time step
    (T = 1 for an ANN on static input); ``stages`` holds each stage's output ``[T, B, C, H, W]``
    when asked for.
    """

    logits_t: torch.Tensor
    feature_t: torch.Tensor
    stages: list[torch.Tensor] | None = None

    @property
    def logits(self) -> torch.Tensor:
        return self.logits_t.mean(0)

    @property
    def feature(self) -> torch.Tensor:
        return self.feature_t.mean(0)


class SpikingNet(nn.Module):
    """An ANN or SNN built from interchangeable activations (see the module docstring)."""

    def __init__(self, encoder: nn.Module, stem: TimeSequential, stages: nn.ModuleList,
                 pool: nn.Module, classifier: nn.Linear, T: int, spiking: bool,
                 stage_channels: list[int] | None = None):
        super().__init__()
        if stage_channels is not None and len(stage_channels) != len(stages):
            raise SpikeguideError(f"stage_channels declares {len(stage_channels)} stages, the "
                                  f"model has {len(stages)}")
        self.encoder = encoder
        self.stem = stem
        self.stages = stages
        self.pool = pool
        self.classifier = classifier
        self.spiking = spiking
        self.T = T
        # output channels of each stage (None: not declared)
        self.stage_channels = list(stage_channels) if stage_channels is not None else None

    @property
    def T(self) -> int:
        return self._T

    @T.setter
    def T(self, value: int) -> None:
        if int(value) < 1:
            raise SpikeguideError(f"the number of time steps T must be >= 1, got {value}")
        self._T = int(value)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> stem output ``[T, B, ...]``."""
        if x.dim() == 4:
            h = broadcast_time(self.encoder(x), self.T if self.spiking else 1)
        elif x.dim() == 5:  # [B, T, C, H, W] frames: one step per frame
            h = fold_apply(self.encoder, x.transpose(0, 1))
        else:
            raise SpikeguideError(
                f"model input must be [B, C, H, W] images or [B, T, C, H, W] frames, got shape "
                f"{tuple(x.shape)}"
            )
        return self.stem(h)

    def run_stages(self, h: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Run ``stages[start:end]`` on ``h`` ``[T, B, ...]``."""
        for stage in self.stages[start:end]:
            h = stage(h)
        return h

    def head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last stage output ``[T, B, ...]`` -> (feature_t ``[T, B, D]``, logits_t ``[T, B, K]``)."""
        feature_t = time_apply(self.pool, h)
        return feature_t, fold_apply(self.classifier, feature_t)

    def forward_features(self, x: torch.Tensor, return_stages: bool = False) -> ModelOutput:
        h = self.encode(x)
        stages = []
        for stage in self.stages:
            h = stage(h)
            if return_stages:
                stages.append(h)
        feature_t, logits_t = self.head(h)
        return ModelOutput(logits_t, feature_t, stages if return_stages else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logits

    def neurons(self) -> list[tuple[str, nn.Module]]:
        """The spiking neurons, in forward order, with their qualified names."""
        return [(name, m) for name, m in self.named_modules() if is_spiking(m)]
