"""The Triton neuron and recording kernels on bfloat16 and float16 tensors: float32 membranes in
registers, the tensors' own dtype in memory; against ``fused`` at the same dtype (in Triton's CPU
interpreter where there is no GPU)."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from spikeguide.neurons import LIF, PLIF
from spikeguide.neurons.surrogates import ATan
from spikeguide.ratepass.eligibility import record_eager

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# relative L2 distance of the input gradient from fused's at the same dtype
GRAD_TOLERANCE = {torch.bfloat16: 0.03, torch.float16: 0.01}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def spikes_grads_saved(cls, backend, reset, x, g):
    """Spikes, gradients (input, then parameters) and the dtypes of the layer-sized tensors
    autograd saved (PLIF's decay is a float32 scalar)."""
    neuron = cls(backend=backend, reset=reset).to(DEVICE)
    saved = []

    def pack(t):
        if t.numel() >= x.numel():
            saved.append(t.dtype)
        return t

    x = x.to(DEVICE).detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        s = neuron(x)
    return s, torch.autograd.grad(s, [x, *neuron.parameters()], g.to(DEVICE)), saved


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cls", [LIF, PLIF])
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_half_precision_triton_neuron_matches_fused(dtype, cls, reset):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 200, generator=gen) * 1.2 + 0.3
    g = torch.randn(x.shape, generator=gen)
    s, grads, saved = spikes_grads_saved(cls, "triton", reset, x.to(dtype), g.to(dtype))
    s_fused, grads_fused, _ = spikes_grads_saved(cls, "fused", reset, x.to(dtype), g.to(dtype))
    s_fp32, grads_fp32, _ = spikes_grads_saved(cls, "fused", reset, x.to(dtype).float(), g)
    assert s.dtype == dtype and saved and all(d == dtype for d in saved)
    # the membrane is float32: the spikes are float32's on the same (rounded) currents, where
    # fused's membrane, rounded to the dtype at every step, flips a few of them
    assert torch.equal(s.float(), s_fp32)
    assert (s != s_fused).float().mean() < 5e-3
    assert relative(grads[0], grads_fused[0]) < GRAD_TOLERANCE[dtype]
    # no further from float32's gradient than fused at the same dtype
    assert relative(grads[0], grads_fp32[0]) <= 1.5 * relative(grads_fused[0], grads_fp32[0]) + 1e-3
    if cls is PLIF:  # the decay's gradient is accumulated in float32
        assert relative(grads[1], grads_fp32[1]) < 0.25


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_triton_recording_matches_the_eager_loop(dtype):
    from spikeguide.neurons.kernels.record import fused_record

    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 32, 100, generator=gen) * 1.2 + 0.3).to(dtype).to(DEVICE)
    args = (0.5, 1.0, "hard", False, ATan())
    spikes, counts, elig = fused_record(x, *args, "triton")
    ref_spikes, ref_counts, ref_elig = record_eager(x.float(), *args)  # float32 membranes
    assert spikes.dtype == elig.dtype == dtype
    assert torch.equal(spikes.float(), ref_spikes) and torch.equal(counts, ref_counts)
    assert relative(elig, ref_elig) < GRAD_TOLERANCE[dtype]
    half_spikes = record_eager(x, *args)[0]  # the eager loop at the dtype itself
    assert (spikes != half_spikes).float().mean() < 5e-3
