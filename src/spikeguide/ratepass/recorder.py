"""Routing a model's nonlinear modules through the two passes of rate-based backpropagation.

:class:`RateRecorder` switches, for the duration of a pass, the ``forward`` of these modules:

* spiking neurons and ReLU (RepAct): the spiking pass records the time-averaged output and
  eligibility (a neuron with LIF dynamics by the LIF fast path, any other from its own dynamics
  and gains); the rate pass returns the recorded rate with the eligibility as derivative;
* max pooling: the rate pass returns the recorded time-averaged output, with the gradient of the
  pooling at the time-averaged input (straight-through);
* batch norm that uses batch statistics: the spiking pass records them, normalizes with them and
  updates the running statistics as the layer would; the rate pass normalizes with them;
* convolutions: the spiking pass runs them a few time steps' slices at a time (the same output,
  with the workspace of those steps; ``conv_steps``); the rate pass leaves them alone.

Every other leaf module must be linear and time-invariant (convolution, linear, average pooling,
flatten, identity), so that on the time-averaged input it gives the time average of its spiking
outputs; anything else is refused up front rather than silently mis-trained.

Why a per-instance ``forward`` override (set in ``module.__dict__``, restored in ``finally``)
rather than hooks: a forward hook cannot skip the original forward, so the spiking pass would run
the neuron dynamics twice and the rate pass would build (and throw away) an autograd graph of the
neuron on the rate input. The override changes exactly one attribute of the instances for exactly
one pass, leaves parameters, buffers, state_dict keys and the module tree untouched, and does not
depend on how the neuron computes its own forward (its backend).
"""

from __future__ import annotations

import functools
import math
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SpikeguideError
from ..models.attention import SpikeAttention
from ..neurons import RATE_PIECES, LIFSpec, SpikingNeuron, is_spiking, missing_piece
from .autograd import rate_unit, recorded_batch_norm
from .eligibility import record_dynamics, record_neuron

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEAR = (nn.Linear, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Identity)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
             nn.AdaptiveMaxPool3d)
BatchNorm = nn.modules.batchnorm._BatchNorm
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def time_mean(x: torch.Tensor, T: int) -> torch.Tensor:
    """Average over time of ``[T, B, ...]`` or time-folded ``[T*B, ...]``; keeps the layout
    (``[1, B, ...]`` or ``[B, ...]``), which is the layout the module sees in the rate pass."""
    return x.reshape(T, -1).mean(0).reshape(x.shape[0] // T, *x.shape[1:])


def uses_batch_stats(bn: nn.Module) -> bool:
    return bn.training or bn.running_mean is None


# Each rule: record(module, forward, x, T) -> (output, record) and replay(module, forward, x, record)
# -> output, where forward is the module's own forward.

def _record_lif(m, forward, x, T):
    with torch.no_grad():
        spec = m.kernel_spec()
    return _neuron_records(record_neuron(x, *spec), T)


def _record_dynamics(m, forward, x, T):
    return _neuron_records(record_dynamics(m, x), T)


def _neuron_records(records, T):
    spikes, counts, eligibility = records
    return spikes, (counts.unsqueeze(0), T, eligibility.unsqueeze(0))


def neuron_rule(m: SpikingNeuron) -> tuple[Callable, Callable]:
    """The LIF fast path for a neuron whose kernel spec is LIF's, else its own contract; a neuron
    that lacks a gain the eligibility needs is refused."""
    if not missing_piece(type(m), "kernel_spec") and isinstance(m.kernel_spec(), LIFSpec):
        return _record_lif, _replay_neuron
    for piece in RATE_PIECES:
        why = missing_piece(type(m), piece)
        if why:
            raise SpikeguideError(
                f"rate-based backpropagation cannot train the neuron {type(m).__name__}: {why}, "
                f"which its eligibility needs (see docs/extending.md, 'A neuron')")
    return _record_dynamics, _replay_neuron


def _replay_neuron(m, forward, x, record):
    counts, T, eligibility = record
    return _replay_rate_unit(m, forward, x, (counts.to(x.dtype) / T, eligibility))


def _record_relu(m, forward, x, T):
    """ReLU (RepAct) as a memoryless rate unit: its eligibility is the mean of its derivative."""
    eligibility = time_mean((x > 0).to(x.dtype), T)
    out = forward(x)
    return out, (time_mean(out, T), eligibility)


def _replay_rate_unit(m, forward, x, record):
    rate, eligibility = record
    if rate.shape != x.shape:
        raise SpikeguideError(f"the rate pass gave {type(m).__name__} an input of shape "
                              f"{tuple(x.shape)}, the spiking pass recorded {tuple(rate.shape)}")
    return rate_unit(x, rate, eligibility)


def _record_max_pool(m, forward, x, T):
    out = forward(x)
    return out, time_mean(out, T)


def _replay_max_pool(m, forward, x, record):
    out = forward(x)
    return out + (record - out).detach()


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance per channel (dim 1) of ``[N, C, ...]``, as batch norm uses.

    Two reductions over contiguous memory and no temporary: several times faster on CPU than
    ``torch.var_mean`` over dims (0, 2, 3). ``E[x^2] - mean^2`` loses about ``(mean/std)^2``
    ulps, harmless for batch norm inputs.
    """
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    n = flat.shape[0] * flat.shape[2]
    dtype = torch.promote_types(x.dtype, torch.float32)  # bf16/fp16 inputs: float32 sums
    mean = flat.sum(2, dtype=dtype).sum(0) / n
    square = torch.linalg.vector_norm(flat, dim=2, dtype=dtype).square().sum(0) / n
    return mean, (square - mean * mean).clamp_min(0)


def conv_steps_for(x: torch.Tensor, T: int, steps: int) -> int:
    """Time steps per convolution call: ``steps``, or for 0 the default of ``x``'s device."""
    if steps > 0:
        return min(steps, T)
    # CPU: measured no faster batched, while oneDNN's reordered copies grow with the batch
    return T if x.device.type == "cuda" else 1


def _time_chunked(m, forward, x, T, steps=0):
    """A convolution on a time-folded ``[T*B, ...]`` input, run ``steps`` time steps at a time.

    Convolution is per sample, so the output is the same (up to float rounding: oneDNN may choose
    another algorithm for another batch size); only the layer's own workspace (oneDNN's reordered
    copies and scratch) becomes that of ``steps`` steps instead of T. A static input's encoding
    (``[B, ...]``, shared by every step) is split alike.
    """
    steps = conv_steps_for(x, T, steps)
    if steps == T:
        return forward(x), None
    out, start = None, 0
    for part in x.split(math.ceil(len(x) * steps / T)):
        y = forward(part)
        if out is None:
            out = y.new_empty((x.shape[0], *y.shape[1:]))
        out[start:start + len(y)] = y
        start += len(y)
    return out, None


def update_running_stats(bn: BatchNorm, mean: torch.Tensor, var: torch.Tensor,
                         n: int | torch.Tensor) -> None:
    """What a training-mode forward of ``bn`` does to its running statistics, given the batch
    mean and biased variance of ``n`` values a channel."""
    if not (bn.training and bn.track_running_stats and bn.running_mean is not None):
        return
    bn.num_batches_tracked.add_(1)
    factor = bn.momentum
    if factor is None:  # a cumulative average; a tensor, so that the host does not wait for it
        # divided in the statistics' dtype: an integer tensor divides in float32
        factor = 1.0 / bn.num_batches_tracked.to(bn.running_mean.dtype)
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), factor)
    bn.running_var.lerp_((var * (n / (n - 1))).to(bn.running_var.dtype), factor)


def _record_batch_norm(m, forward, x, T):
    """Normalize with the statistics recorded for the rate pass, and update the running
    statistics as the layer's training-mode forward would: that forward computes its statistics
    itself, which on CPU takes several times as long as :func:`channel_stats` and a
    normalization together."""
    n = x.numel() // x.shape[1]
    if n < 2:
        raise SpikeguideError(f"{type(m).__name__} needs more than one value per channel in "
                              f"training, got an input of shape {tuple(x.shape)}")
    mean, var = channel_stats(x)
    update_running_stats(m, mean, var, n)
    return F.batch_norm(x, mean, var, m.weight, m.bias, False, 0.0, m.eps), (mean, var)


def _replay_batch_norm(m, forward, x, record):
    return recorded_batch_norm(x, m, *record)


def rule_for(m: nn.Module, conv_steps: int = 0) -> tuple[Callable, Callable] | None:
    """(record, replay) for a module that needs routing; None for one that is linear over time.

    ``conv_steps``: time steps per convolution call in the spiking pass (0: the device's default).
    """
    if isinstance(m, CONVS):  # nothing to replay: linear over time
        return functools.partial(_time_chunked, steps=conv_steps), None
    if is_spiking(m):
        return neuron_rule(m)
    if isinstance(m, nn.ReLU):
        return _record_relu, _replay_rate_unit
    if isinstance(m, MAX_POOLS):
        return _record_max_pool, _replay_max_pool
    if type(m) in BATCH_NORMS:
        return (_record_batch_norm, _replay_batch_norm) if uses_batch_stats(m) else None
    if isinstance(m, BatchNorm) and uses_batch_stats(m):  # e.g. synchronized over processes
        raise SpikeguideError(
            f"rate-based backpropagation records the batch statistics of plain batch norm only, "
            f"not of {type(m).__name__}: train it without train.sync_batchnorm"
        )
    if isinstance(m, SpikeAttention):
        raise SpikeguideError(
            f"rate-based backpropagation does not support {type(m).__name__}: it multiplies two "
            "spike tensors, and the time average of a product is not the product of the rates "
            "(docs/ratebp.md); train spiking transformers with bptt, kd or enof"
        )
    if isinstance(m, (LINEAR, BatchNorm)) or list(m.children()):
        return None
    raise SpikeguideError(
        f"rate-based backpropagation does not support the layer {type(m).__name__}: it must know "
        "whether the layer is linear over time (conv, linear, average pooling, BN) or how to "
        "replace it by its time average (spiking neurons, ReLU, max pooling)"
    )


@contextmanager
def _overridden(forwards: dict[nn.Module, Callable]) -> Iterator[None]:
    saved = {m: m.__dict__.get("forward") for m in forwards}
    try:
        for m, fn in forwards.items():
            m.forward = fn
        yield
    finally:
        for m, previous in saved.items():
            if previous is None:
                del m.forward
            else:
                m.forward = previous


def check_model(model: nn.Module) -> None:
    """Refuse, with a one-line error, a model with a layer or neuron the two passes cannot route
    (run when a method starts, so that it does not fail at its first step)."""
    for m in model.modules():
        rule_for(m)


class RateRecorder:
    """The spiking pass (:meth:`recording`) and the rate pass (:meth:`replaying`) of one model.

    Records are kept per module in call order, so a module called twice per forward replays its
    two records in the same order. ``conv_steps``: time steps each convolution of the spiking pass
    runs at once (0: 1 on CPU, all T on CUDA).
    """

    def __init__(self, model: nn.Module, conv_steps: int = 0):
        self.rules = {m: rule for m in model.modules()
                      if (rule := rule_for(m, conv_steps)) is not None}
        self.records: dict[nn.Module, deque[Any]] = {m: deque() for m in self.rules}

    @contextmanager
    def recording(self, T: int) -> Iterator[None]:
        """Spiking pass over ``T`` steps (run it under ``torch.no_grad()``)."""
        for queue in self.records.values():  # left over from a pass that failed
            queue.clear()
        def make(m, record):
            forward = m.forward

            def recorded(x):
                out, rec = record(m, forward, x, T)
                if rec is not None:
                    self.records[m].append(rec)
                return out
            return recorded

        with _overridden({m: make(m, record) for m, (record, _) in self.rules.items()}):
            yield

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Rate pass: one step on the time-averaged input; consumes the records."""
        def make(m, replay):
            forward = m.forward

            def replayed(x):
                if not self.records[m]:
                    raise SpikeguideError("the rate pass called a layer more often than the "
                                          "spiking pass did; run both on the same model and input")
                return replay(m, forward, x, self.records[m].popleft())
            return replayed

        try:
            with _overridden({m: make(m, replay) for m, (_, replay) in self.rules.items()
                              if replay is not None}):
                yield
        finally:
            for queue in self.records.values():
                queue.clear()

    @contextmanager
    def in_one_pass(self) -> Iterator[None]:
        """Both passes at once, for T = 1: each routed layer records its input without autograd
        and at once replays the record on that input, with autograd.

        At one step the rate pass gives every layer the input the spiking pass gave it (the
        time averages are the values themselves), so this is the two passes without running the
        model twice. Layers that need no replay (convolutions) run as they are.
        """
        def make(m, record, replay):
            forward = m.forward

            def recorded_and_replayed(x):
                with torch.no_grad():
                    _, rec = record(m, forward, x, 1)
                return replay(m, forward, x, rec)
            return recorded_and_replayed

        with _overridden({m: make(m, record, replay) for m, (record, replay) in self.rules.items()
                          if replay is not None}):
            yield
