"""The fused spiking pass of rate-based BP (C++ on CPU, Triton in its interpreter) against the
eager reference loop, and what the spiking pass's speed-ups must leave unchanged."""

from __future__ import annotations

import copy
import importlib.util
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

if not torch.cuda.is_available():  # the Triton kernel then runs in Triton's CPU interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from spikeguide.errors import SpikeguideError
from spikeguide.methods.ratebp import RateBP
from spikeguide.models import create_model
from spikeguide.neurons import LIF, SURROGATES, Surrogate, get_surrogate
from spikeguide.neurons.kernels import cpu
from spikeguide.neurons.kernels.record import fused_record, record_backend
from spikeguide.ratepass import RateRecorder, eligibility, rate_forward, recorder
from spikeguide.ratepass.eligibility import record_eager, record_neuron
from spikeguide.ratepass.passes import two_passes

RULES = [("soft", True), ("soft", False), ("hard", True), ("hard", False)]
KERNELS = [
    pytest.param("compiled", marks=pytest.mark.skipif(
        not cpu.available(), reason=f"C++ extension did not build: {cpu._build()[1]}")),
    pytest.param("triton", marks=pytest.mark.skipif(
        importlib.util.find_spec("triton") is None, reason="triton is not installed")),
]


def currents(shape=(6, 4, 3, 5, 5), seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=dtype) * 1.2 + 0.5


def assert_same_records(fused, eager, decay, threshold, reset, detach, surrogate, x):
    spikes, counts, elig = fused
    assert torch.equal(spikes, eager[0]) and torch.equal(counts, eager[1])
    assert torch.equal(spikes, LIF(decay, threshold, reset, detach, surrogate)(x))
    assert spikes.sum() > 0 and (spikes == 0).any()  # both branches exercised
    torch.testing.assert_close(elig, eager[2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("reset,detach", RULES)
def test_fused_recording_matches_the_eager_loop(kernel, reset, detach):
    """Spikes bit-identical to the neuron's, counts equal and eligibility within 1e-6 of the
    eager loop, in float32, for every built-in surrogate and decay."""
    x = currents()
    for name in SURROGATES.names():
        surrogate = get_surrogate(name)
        for decay in (0.2, 0.5, 1.0):
            args = (decay, 0.9, reset, detach, surrogate)
            assert_same_records(fused_record(x, *args, kernel), record_eager(x, *args), *args, x)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_recording_keeps_layouts_and_long_counts(kernel):
    surrogate = get_surrogate("atan")
    args = (0.6, 1.0, "hard", False, surrogate)
    x = currents()
    cl = x.flatten(0, 1).to(memory_format=torch.channels_last).unflatten(0, x.shape[:2])
    fused = fused_record(cl, *args, kernel)
    assert fused[0].stride() == cl.stride()  # the activation's own memory order, no copy
    assert_same_records(fused, record_eager(x, *args), *args, x)
    static = x[0].expand(6, *x.shape[1:])  # a static input's current, broadcast over T
    assert_same_records(fused_record(static, *args, kernel), record_eager(static, *args), *args,
                        static)
    long = currents((300, 40)) + 2  # T >= 256: counts no longer fit in a byte
    fused = fused_record(long, *args, kernel)
    assert fused[1].dtype == torch.int32 and fused[1].max() > 255
    assert_same_records(fused, record_eager(long, *args), *args, long)


def test_float64_runs_the_compiled_kernel_too():
    if not cpu.available():
        pytest.skip("C++ extension did not build")
    x = currents(dtype=torch.float64)
    surrogate = get_surrogate("sigmoid")
    assert record_backend(x, surrogate) == "compiled"
    fused, eager = (f(x, 0.5, 1.0, "soft", False, surrogate) for f in (record_neuron, record_eager))
    assert torch.equal(fused[0], eager[0]) and torch.equal(fused[1], eager[1])
    torch.testing.assert_close(fused[2], eager[2], rtol=1e-12, atol=1e-12)


class Cubic(Surrogate):
    def derivative(self, x):
        return (1 - (x / self.width).abs()).clamp_min(0) ** 3


def test_what_no_kernel_records_runs_the_eager_loop(monkeypatch):
    x = currents()
    assert record_backend(x.bfloat16(), get_surrogate("atan")) is None
    assert record_backend(x, Cubic()) is None  # its derivative exists in torch only
    spikes, counts, elig = record_neuron(x, 0.5, 1.0, "hard", False, Cubic())
    reference = record_eager(x, 0.5, 1.0, "hard", False, Cubic())
    assert all(torch.equal(a, b) for a, b in zip((spikes, counts, elig), reference))
    monkeypatch.setattr(cpu, "available", lambda: False)  # the extension did not build
    assert record_backend(x, get_surrogate("atan")) is None


def small_resnet(T, **kw):
    torch.manual_seed(0)
    return create_model("resnet19", T=T, width=0.125, **kw), torch.rand(6, 3, 32, 32)


def step_grads(model, x, **kw):
    y = torch.arange(len(x)) % 10
    F.cross_entropy(rate_forward(model, x, **kw).logits, y).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def test_a_ratebp_step_gives_the_eager_loops_gradients(monkeypatch):
    if not cpu.available():
        pytest.skip("C++ extension did not build")
    model, x = small_resnet(4, neuron_options={"reset": "soft"})
    eager_model = copy.deepcopy(model)
    grads = step_grads(model, x)
    monkeypatch.setattr(eligibility, "record_backend", lambda current, surrogate: None)
    eager = step_grads(eager_model, x)
    for name, g in grads.items():
        torch.testing.assert_close(g, eager[name], rtol=1e-5, atol=1e-7, msg=name)
    for a, b in zip(model.buffers(), eager_model.buffers()):
        assert torch.equal(a, b)  # the spiking passes normalized and counted alike


def test_convolutions_give_the_same_spiking_pass_whatever_steps_they_run_at_once():
    model, x = small_resnet(3)
    x = x[:5]  # the static encoder's 5 samples split unevenly
    stages, grads = [], []
    for steps in (1, 2, 3):
        m = copy.deepcopy(model)
        recorder = RateRecorder(m, conv_steps=steps)
        with torch.no_grad(), recorder.recording(3):
            stages.append(m.forward_features(x, return_stages=True).stages)
        grads.append(step_grads(m, x, conv_steps=steps))
    for other, other_grads in zip(stages[1:], grads[1:]):
        assert all(torch.equal(a, b) for a, b in zip(stages[0], other))
        for name, g in grads[0].items():  # oneDNN may round another batch size differently
            torch.testing.assert_close(other_grads[name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_at_one_step_one_pass_gives_what_two_passes_give():
    model, x = small_resnet(1, repact=True)
    two = copy.deepcopy(model)
    y = torch.arange(len(x)) % 10
    out = rate_forward(model, x, return_stages=True)
    ref = two_passes(two, RateRecorder(two), x, 1, return_stages=True)
    assert torch.equal(out.logits, ref.logits)
    assert all(torch.equal(a, b) for a, b in zip(out.stages, ref.stages))
    F.cross_entropy(out.logits, y).backward()
    F.cross_entropy(ref.logits, y).backward()
    for (name, p), q in zip(model.named_parameters(), two.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        assert p.grad is None or torch.equal(p.grad, q.grad), name
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), two.buffers()))


def test_the_spiking_pass_updates_running_statistics_as_batch_norm_does():
    """Also the cumulative average of ``momentum=None`` and the batch counter."""
    model, x = small_resnet(2)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = None
    reference = copy.deepcopy(model)
    for batch in (x, x.flip(0) * 0.5):
        rate_forward(model, batch)
        reference(batch)
    for (name, a), b in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert int(model.encoder[1].num_batches_tracked) == 2


def test_batch_norm_of_a_single_value_per_channel_is_refused():
    model = nn.Sequential(nn.BatchNorm1d(3)).train()
    with pytest.raises(SpikeguideError) as err:
        with torch.no_grad(), RateRecorder(model).recording(1):
            model(torch.randn(1, 3))
    assert str(err.value) == ("BatchNorm1d needs more than one value per channel in training, "
                              "got an input of shape (1, 3)")


def test_conv_steps_must_not_be_negative():
    with pytest.raises(SpikeguideError, match="method.conv_steps must be >= 0"):
        RateBP.Options(conv_steps=-1)


def test_a_relu_records_the_time_mean_of_its_autograd_derivative_even_at_zero():
    T, B = 2, 2
    x = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 3.0, -2.0], [1.0, 0.0, 0.5], [0.0, -1.0, 4.0]],
                     requires_grad=True)  # time-folded [T*B, 3], exact zeros included
    torch.relu(x).sum().backward()  # autograd's ReLU derivative is 0 at 0
    relu = nn.ReLU()
    out, (rate, elig) = recorder._record_relu(relu, relu, x.detach(), T)
    assert torch.equal(elig, x.grad.reshape(T, B, 3).mean(0))
    assert torch.equal(rate, torch.relu(x.detach()).reshape(T, B, 3).mean(0))
    assert torch.equal(out, torch.relu(x.detach()))


def test_a_replayed_neuron_given_another_shape_names_the_module_and_both_shapes():
    record = (torch.zeros(4, 3, dtype=torch.uint8), 2, torch.zeros(4, 3))
    with pytest.raises(SpikeguideError) as err:
        recorder._replay_neuron(LIF(), None, torch.zeros(2, 3), record)
    assert str(err.value) == ("the rate pass gave LIF an input of shape (2, 3), the spiking "
                              "pass recorded (4, 3)")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_channel_statistics_of_half_precision_inputs_are_summed_and_returned_in_float32(dtype):
    x = (torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5
         + 4).to(dtype)
    mean, var = recorder.channel_stats(x)
    assert mean.dtype == var.dtype == torch.float32
    ref = x.double()
    torch.testing.assert_close(mean.double(), ref.mean((0, 2, 3)), rtol=1e-6, atol=0)
    # E[x^2] - mean^2 loses about (mean / std)^2 = 64 float32 ulps of E[x^2]
    torch.testing.assert_close(var.double(), ref.var((0, 2, 3), unbiased=False), rtol=1e-3,
                               atol=0)


def test_convolutions_default_to_every_step_at_once_on_cuda_and_to_one_on_cpu():
    on_cuda = SimpleNamespace(device=torch.device("cuda"))  # only its device is read
    on_cpu = torch.zeros(1)
    assert recorder.conv_steps_for(on_cuda, 4, 0) == 4
    assert recorder.conv_steps_for(on_cpu, 4, 0) == 1
    assert recorder.conv_steps_for(on_cuda, 4, 1) == 1  # an explicit count wins everywhere
    assert recorder.conv_steps_for(on_cpu, 4, 2) == 2
    assert recorder.conv_steps_for(on_cuda, 4, 8) == 4  # at most T


def test_a_convolution_in_the_spiking_pass_runs_conv_steps_time_steps_per_call():
    T, B = 4, 3
    conv = nn.Conv2d(2, 2, 3, padding=1)
    rows = []

    def forward(part):
        rows.append(len(part))
        return conv(part)

    x = torch.randn(T * B, 2, 5, 5)
    out, record = recorder._time_chunked(conv, forward, x, T, steps=2)
    assert rows == [2 * B, 2 * B] and record is None
    torch.testing.assert_close(out, conv(x))


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (2, 3)])  # (2, 3): two values a channel
@pytest.mark.parametrize("track", [True, False])
def test_a_recorded_batch_norm_gives_its_own_training_forward(shape, track):
    bn = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(
        3, eps=0.1, track_running_stats=track).train()
    with torch.no_grad():  # away from the identity affine
        bn.weight.copy_(torch.tensor([0.5, -2.0, 3.0]))
        bn.bias.copy_(torch.tensor([1.0, 0.25, -0.5]))
    reference = copy.deepcopy(bn)
    x = torch.randn(shape)
    out, (mean, var) = recorder._record_batch_norm(bn, bn, x, 2)
    torch.testing.assert_close(out, reference(x))
    dims = (0, 2, 3) if len(shape) == 4 else (0,)
    torch.testing.assert_close(mean, x.mean(dims))
    torch.testing.assert_close(var, x.var(dims, unbiased=False))
    for a, b in zip(bn.buffers(), reference.buffers()):
        torch.testing.assert_close(a, b)


def test_only_a_batch_norm_that_normalizes_with_its_batch_is_routed():
    assert recorder.rule_for(nn.BatchNorm2d(3).train()) is not None
    assert recorder.rule_for(nn.BatchNorm2d(3).eval()) is None  # running statistics: linear
    assert recorder.rule_for(nn.BatchNorm2d(3, track_running_stats=False).eval()) is not None


def test_a_float64_cumulative_average_matches_batch_norm_to_float64_rounding():
    bn = nn.BatchNorm2d(3, momentum=None).double().train()
    reference = copy.deepcopy(bn)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # factors 1, 1/2, 1/3: the last is not a float32 number
        x = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64) + 1
        recorder._record_batch_norm(bn, bn, x, 2)
        reference(x)
    torch.testing.assert_close(bn.running_mean, reference.running_mean, rtol=1e-13, atol=0)
    torch.testing.assert_close(bn.running_var, reference.running_var, rtol=1e-13, atol=0)
