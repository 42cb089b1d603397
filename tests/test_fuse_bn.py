"""Batch norm fused with the LIF (``[neuron] fuse_bn``) against the two layers run apart."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

if not torch.cuda.is_available():  # Triton kernels then run in Triton's CPU interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from spikeguide import SpikeguideError
from spikeguide.config import parse_config
from spikeguide.models import create_model
from spikeguide.models.layers import TimeSequential
from spikeguide.neurons import LIF, PLIF, fuse_bn
from spikeguide.neurons.kernels import cpu

needs_cpp = pytest.mark.skipif(not cpu.available(), reason="C++ extension did not build")
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed")


def conv_bn_lif(neuron: nn.Module, fuse: str, channels_last: bool, training: bool,
                dtype=torch.float32) -> TimeSequential:
    torch.manual_seed(0)
    seq = TimeSequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), neuron).to(dtype)
    neuron.fuse_bn = fuse
    with torch.no_grad():  # away from the defaults, so that a swapped weight/bias or stat shows
        seq[1].weight.uniform_(0.5, 2)
        seq[1].bias.uniform_(-0.5, 1)
        seq[1].running_mean.uniform_(-0.2, 0.2)
        seq[1].running_var.uniform_(0.5, 2)
    seq.train(training)
    return seq.to(memory_format=torch.channels_last) if channels_last else seq


def outputs(seq: TimeSequential, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Spikes, every gradient (input and parameters) and the batch norm's buffers after one call."""
    torch.manual_seed(1)
    x = torch.randn(4, 6, 3, 8, 8, dtype=dtype, requires_grad=True)
    s = seq(x)
    (s * torch.randn_like(s)).sum().backward()
    grads = {f"grad {name}": p.grad for name, p in seq.named_parameters()}
    return {"spikes": s, "grad x": x.grad, **grads, **dict(seq[1].named_buffers())}


def assert_equal_within(fused, apart, tol=1e-5):
    """Equal within ``tol`` relative to the largest value (at least 1). The bias of the layer
    before a training-mode batch norm has the exact gradient 0; both paths give rounding noise
    there, so it is checked to be near 0 instead."""
    assert fused.keys() == apart.keys()
    assert fused["spikes"].sum() > 0 and (fused["spikes"] == 0).any()  # neither silent nor saturated
    if apart.get("num_batches_tracked", 0) > 0:
        bias = fused.pop("grad 0.bias"), apart.pop("grad 0.bias")
        assert all(float(b.abs().max()) < 1e3 * tol for b in bias)
    for key, a in apart.items():
        scale = max(1.0, float(a.detach().abs().max()))
        torch.testing.assert_close(fused[key], a, rtol=0, atol=tol * scale, msg=key)


def count_fused_calls(monkeypatch) -> list:
    calls = []
    real = fuse_bn.fused_bn_forward
    monkeypatch.setattr(fuse_bn, "fused_bn_forward",
                        lambda *a: calls.append(a[-1]) or real(*a))
    return calls


@needs_cpp
@pytest.mark.parametrize("neuron", ["lif hard", "lif soft detached", "plif hard", "plif soft"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_fused_cpu_kernel_equals_the_layers_apart(neuron, channels_last, training, monkeypatch):
    kind, reset, *detach = neuron.split()
    make = lambda: (PLIF if kind == "plif" else LIF)(0.5, reset=reset, detach_reset=bool(detach),
                                                      backend="compiled")
    calls = count_fused_calls(monkeypatch)
    apart = outputs(conv_bn_lif(make(), "false", channels_last, training))
    assert calls == []
    fused = outputs(conv_bn_lif(make(), "true", channels_last, training))
    assert calls == ["compiled"]
    assert_equal_within(fused, apart)


@needs_cpp
def test_fused_kernel_is_exact_in_float64():
    """In float64 the fused node and the layers apart agree to rounding of float64: a wrong term
    of the batch norm's backward (the mean or the xhat term) would show far above it."""
    make = lambda fuse: conv_bn_lif(PLIF(0.5, backend="compiled"), fuse, False, True, torch.float64)
    apart, fused = outputs(make("false"), torch.float64), outputs(make("true"), torch.float64)
    decay = "grad 2.decay_logit"  # the unfused kernel returns it through float32
    assert_equal_within({k: v for k, v in fused.items() if k != decay},
                        {k: v for k, v in apart.items() if k != decay}, tol=1e-12)


@needs_cpp
def test_batchnorm1d_on_linear_currents():
    def run(fuse):
        torch.manual_seed(0)
        seq = TimeSequential(nn.Linear(7, 6), nn.BatchNorm1d(6), LIF(0.5, backend="compiled"))
        seq[2].fuse_bn = fuse
        x = torch.randn(3, 16, 7, requires_grad=True)
        s = seq(x)
        (s * torch.randn_like(s)).sum().backward()
        return {"spikes": s, "grad x": x.grad, "w": seq[1].weight.grad, "rv": seq[1].running_var}
    torch.manual_seed(2)
    assert_equal_within(run("true"), run("false"))


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_fused_triton_kernels_equal_the_layers_apart(channels_last, training, monkeypatch):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    calls = count_fused_calls(monkeypatch)
    apart = outputs(conv_bn_lif(PLIF(0.5, backend="triton"), "false", channels_last, training).to(device))
    fused = outputs(conv_bn_lif(PLIF(0.5, backend="triton"), "true", channels_last, training).to(device))
    assert calls == ["triton"]
    assert_equal_within(fused, apart)


COMPILE_TRITON = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from spikeguide.neurons.kernels import triton_bn_lif as K
from spikeguide.neurons.kernels.triton_lif import BLOCK

def ptx(fn, ptrs, scalars, constexprs):
    sig = {**{a: "*fp32" for a in ptrs}, **{s: "i32" for s in scalars[0]},
           **{s: "fp32" for s in scalars[1]}, **{c: "constexpr" for c in constexprs}}
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs),
                          target=GPUTarget("cuda", 90, 32),
                          options={"enable_fp_fusion": False}).asm["ptx"]

ints = ["stride_t", "N", "T", "C", "inner"]
for soft in (True, False):
    code = ptx(K._bn_forward, ["x", "spk", "mem", "alpha", "beta"], (ints, ["decay", "threshold"]),
               {"SOFT": soft, "SAVE_H": True, "BLOCK": BLOCK})
    assert "fma" not in code, "a fused multiply-add would change membrane values"
    for sid in range(5):
        for block_c in (1, 64):
            ptx(K._bn_backward_sums, ["grad_s", "x", "mem", "grad_i", "mean", "invstd", "partial",
                "partial_decay"], (ints + ["P"], ["decay", "threshold", "width"]),
                {"SOFT": soft, "DETACH": sid % 2 == 0, "SID": sid, "WANT_DECAY": True,
                 "BLOCK_P": BLOCK // block_c, "BLOCK_C": block_c})
ptx(K._bn_backward_input, ["x", "grad", "alpha", "mean", "invstd", "k1", "k2"], (ints, []),
    {"BLOCK": BLOCK})
print("compiled")
"""


@needs_triton
@pytest.mark.slow
def test_fused_triton_kernels_compile_to_ptx():
    """The kernels compile for an sm_90 GPU (no GPU needed), without fused multiply-adds in the
    forward (they would change a membrane value)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run([sys.executable, "-c", COMPILE_TRITON], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


@needs_cpp
def test_a_model_fuses_its_pairs_and_keeps_its_state_dict(monkeypatch):
    def model(fuse):
        torch.manual_seed(0)
        return create_model("resnet20", width=0.125, T=2, fuse_bn=fuse,
                            neuron_options={"backend": "compiled"})
    calls = count_fused_calls(monkeypatch)
    fused, apart = model("true"), model("false")
    assert fused.state_dict().keys() == apart.state_dict().keys()
    x = torch.randn(4, 3, 32, 32)
    out_fused, out_apart = fused(x), apart(x)
    # resnet20: two pairs in the stem, one in each of the 8 blocks' residual branch
    assert len(calls) == 10
    torch.testing.assert_close(out_fused, out_apart, rtol=0, atol=1e-4)
    apart.load_state_dict(fused.state_dict())  # checkpoints of either load into the other


@needs_cpp
def test_a_hook_on_the_neuron_runs_the_pair_apart_and_says_so(monkeypatch, caplog):
    calls = count_fused_calls(monkeypatch)
    monkeypatch.setattr(fuse_bn, "_logged", set())  # each reason is logged once per process
    seq = conv_bn_lif(LIF(backend="compiled"), "true", False, True)
    seen = []
    seq[2].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with caplog.at_level(logging.INFO, logger="spikeguide"):
        seq(torch.randn(2, 2, 3, 4, 4))
    assert calls == [] and len(seen) == 1
    assert "runs apart from the neuron" in caplog.text and "hook" in caplog.text


@needs_cpp
def test_auto_fuses_only_on_backends_measured_faster(monkeypatch):
    calls = count_fused_calls(monkeypatch)
    seq = conv_bn_lif(LIF(backend="compiled"), "auto", False, True)
    seq(torch.randn(2, 2, 3, 4, 4))
    assert calls == []  # measured slower on CPU (docs/speed.md)
    monkeypatch.setattr(fuse_bn, "AUTO_FUSES", ("compiled",))
    seq(torch.randn(2, 2, 3, 4, 4))
    assert calls == ["compiled"]


def test_fuse_bn_true_where_the_backend_cannot_is_a_one_line_error():
    seq = conv_bn_lif(LIF(backend="fused"), "true", False, True)
    with pytest.raises(SpikeguideError, match="fuse_bn = true") as err:
        seq(torch.randn(2, 2, 3, 4, 4))
    assert "\n" not in str(err.value)
    seq[2].fuse_bn = "auto"
    seq(torch.randn(2, 2, 3, 4, 4))  # auto: the two layers apart


@needs_cpp
def test_bf16_on_cpu_runs_the_neuron_compiled_and_the_batch_norm_apart(monkeypatch):
    """The compiled neuron runs bf16 tensors; its fused batch norm does not (float32/float64):
    auto runs the pair apart, true says so in one line."""
    calls = count_fused_calls(monkeypatch)
    monkeypatch.setattr(fuse_bn, "AUTO_FUSES", ("compiled",))
    seq = conv_bn_lif(LIF(backend="compiled"), "auto", False, True, dtype=torch.bfloat16)
    assert seq(torch.randn(2, 2, 3, 4, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert calls == []
    seq[2].fuse_bn = "true"
    with pytest.raises(SpikeguideError, match="bfloat16 tensors; the fused batch norm"):
        seq(torch.randn(2, 2, 3, 4, 4, dtype=torch.bfloat16))


def test_config_reads_fuse_bn_as_toml_boolean_or_word():
    assert parse_config({"neuron": {"fuse_bn": True}}).neuron.fuse_bn == "true"
    assert parse_config({"neuron": {"fuse_bn": "false"}}).neuron.fuse_bn == "false"
    assert parse_config({}).neuron.fuse_bn == "auto"
    with pytest.raises(SpikeguideError, match="neuron.fuse_bn must be one of auto, true, false"):
        parse_config({"neuron": {"fuse_bn": "yes"}})
