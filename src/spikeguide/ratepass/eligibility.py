"""The recorded spiking pass of one neuron layer: spikes, firing rate and eligibility.

For an input current ``I`` ``[T, ...]`` the dynamics are those of :mod:`spikeguide.neurons.lif`
(charge, fire with H(0) = 1, reset). Beside the spikes this pass returns, per neuron,

* the firing rate ``r = mean_t s_t`` (as the spike count), and
* the eligibility ``e = mean_t sg'(u_t - threshold) * kappa_t``: the surrogate derivative of
  ``r`` with respect to an input perturbation that is the same at every step, which is what the
  rate pass needs (its input is the time-averaged current).

``kappa_t = du_t / d(delta)`` follows the neuron's own reset rule: ``kappa_t = 1 + decay *
a_{t-1} * kappa_{t-1}`` with ``kappa_0 = 0``, where ``a_t = du_t^+ / du_t`` is the derivative of
the post-reset membrane (``g_t = sg'(u_t - threshold)``):

    soft, detached reset:  a_t = 1
    soft reset:            a_t = 1 - threshold * g_t
    hard, detached reset:  a_t = 1 - s_t
    hard reset:            a_t = 1 - s_t - u_t * g_t

The derivations are in ``docs/ratebp.md``. Only running sums are kept, so the memory beyond the
spikes does not grow with T.

:func:`record_neuron` is the LIF fast path: a fused kernel where one exists
(:mod:`spikeguide.neurons.kernels.record`: C++ on CPU, Triton on CUDA, for the built-in
surrogates), :func:`record_eager` the eager reference and the fallback for everything else.
:func:`record_dynamics` records any other neuron from its own contract (charge, fire and reset
with their gains, :mod:`spikeguide.neurons.base`).
"""

from __future__ import annotations

import torch

from ..neurons import SpikingNeuron, Surrogate
from ..neurons.kernels.ops import count_dtype
from ..neurons.kernels.record import fused_record, record_backend
from ..neurons.lif import scale_by_reset_gain

CHUNK = 1 << 16  # neurons per chunk: the loop's temporaries stay small and in cache


@torch.no_grad()
def record_neuron(current: torch.Tensor, decay: float | torch.Tensor, threshold: float, reset: str,
                  detach_reset: bool, surrogate: Surrogate
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(spikes ``[T, ...]``, spike counts ``[...]``, eligibility ``[...]``) of one neuron layer.

    The firing rate is ``counts / T``; counts are kept as bytes (for T < 256), so that a layer's
    records take 5 bytes a neuron until the rate pass needs them. A fused kernel runs where one
    exists, else :func:`record_eager`; both give the same spikes and counts and the same
    eligibility up to float rounding.
    """
    backend = record_backend(current, surrogate)
    if backend is not None:
        return fused_record(current, decay, threshold, reset, detach_reset, surrogate, backend)
    return record_eager(current, decay, threshold, reset, detach_reset, surrogate)


def record_eager(current: torch.Tensor, decay: float | torch.Tensor, threshold: float, reset: str,
                 detach_reset: bool, surrogate: Surrogate
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`record_neuron` in eager tensor operations, on any device, dtype and surrogate.

    Neurons are independent, so the layer runs in chunks of neurons: besides the spikes, the
    memory is a few chunk-sized buffers, whatever T and the layer size.
    """
    T = current.shape[0]
    flat = current.reshape(T, -1)
    spikes = torch.empty(flat.shape, dtype=current.dtype, device=current.device)
    eligibility = torch.empty_like(spikes[0])
    counts = torch.empty(flat.shape[1], dtype=count_dtype(T), device=current.device)
    for start in range(0, flat.shape[1], CHUNK):
        chunk = slice(start, start + CHUNK)
        record_chunk(flat[:, chunk], spikes[:, chunk], eligibility[chunk], decay, threshold, reset,
                     detach_reset, surrogate)
        counts[chunk] = spikes[:, chunk].sum(0)
    shape = current.shape[1:]
    return spikes.view(current.shape), counts.view(shape), eligibility.view(shape)


def record_chunk(current: torch.Tensor, spikes: torch.Tensor, eligibility: torch.Tensor,
                 decay: float | torch.Tensor, threshold: float, reset: str, detach_reset: bool,
                 surrogate: Surrogate) -> None:
    """Fill ``spikes`` ``[T, n]`` and ``eligibility`` ``[n]`` from ``current`` ``[T, n]``.

    In-place updates keep the loop at about fifteen passes over ``n`` values a step; the membrane
    update and the spike test are the same float operations as
    :func:`spikeguide.neurons.lif.lif_multistep`, so the spikes are bit-identical to the neuron's.
    """
    T = current.shape[0]
    u = torch.zeros_like(eligibility)
    kappa = torch.zeros_like(u)  # a_{t-1} * kappa_{t-1}: the trace of the post-reset membrane
    eligibility.zero_()
    x = torch.empty_like(u)
    one = torch.ones((), dtype=u.dtype, device=u.device)
    for t in range(T):
        u.mul_(decay).add_(current[t])
        kappa.mul_(decay).add_(1)
        torch.sub(u, threshold, out=x)
        g = surrogate.derivative(x)
        s = spikes[t]
        torch.heaviside(x, one, out=s)  # H(0) = 1, as the neuron fires at u = threshold
        eligibility.addcmul_(g, kappa)
        scale_by_reset_gain(kappa, u, s, g, threshold, reset, detach_reset)
        if reset == "soft":
            u.sub_(s, alpha=threshold)  # u - threshold * s: threshold * s is exact
        else:
            u.addcmul_(u, s, value=-1)  # u * (1 - s): u - u or u - 0, exact
    eligibility.div_(T)


@torch.no_grad()
def record_dynamics(neuron: SpikingNeuron, current: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`record_neuron` returns, for any neuron that defines the gains rate-based
    backpropagation needs (``charge_gains``, ``fire_gain``, ``reset_gain``), from its own
    dynamics::

        kappa_t = (du_t/du_{t-1}^+) * a_{t-1} * kappa_{t-1} + du_t/dI_t,   e = mean_t g_t * kappa_t

    The whole layer at once: a few layer-sized temporaries besides the spikes.
    """
    T = current.shape[0]
    spikes = torch.empty(current.shape, dtype=current.dtype, device=current.device)
    u = torch.zeros_like(spikes[0])
    kappa = torch.zeros_like(u)  # a_{t-1} * kappa_{t-1}: the trace of the post-reset membrane
    eligibility = torch.zeros_like(u)
    for t in range(T):
        membrane_gain, input_gain = neuron.charge_gains(u, current[t])
        kappa = membrane_gain * kappa + input_gain
        u = neuron.charge(u, current[t])
        s = spikes[t] = neuron.fire(u)
        g = neuron.fire_gain(u)
        eligibility += g * kappa
        kappa = kappa * neuron.reset_gain(u, s, g)
        u = neuron.reset_membrane(u, s)
    counts = spikes.sum(0).to(count_dtype(T))
    return spikes, counts, eligibility / T
