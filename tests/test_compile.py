"""torch.compile over the neurons: the fused kernels are custom ops with fake implementations,
so ``fullgraph=True`` traces every backend, and the compiled step gives eager's outputs and
gradients."""

from __future__ import annotations

import importlib.util
import logging
import os

import pytest
import torch
from torch import nn

if not torch.cuda.is_available():  # Triton kernels then run in Triton's CPU interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from conftest import tiny_config
from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.training.checkpoint import load_checkpoint
from spikeguide.neurons import LIF, PLIF
from spikeguide.neurons.kernels import cpu
from spikeguide.neurons.kernels.record import fused_record
from spikeguide.neurons.surrogates import ATan, Sigmoid
from spikeguide.ratepass.eligibility import record_eager

NEEDS_CPP = pytest.mark.skipif(not cpu.available(), reason="the C++ extension did not build")
NEEDS_TRITON = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed")
BACKENDS = ["torch", "fused", pytest.param("compiled", marks=NEEDS_CPP),
            pytest.param("triton", marks=NEEDS_TRITON)]
KERNELS = ["fused", pytest.param("compiled", marks=NEEDS_CPP),
           pytest.param("triton", marks=NEEDS_TRITON)]


class TinySNN(nn.Module):
    """conv -> LIF (hard reset) -> conv -> PLIF (soft reset, sigmoid surrogate) over
    [T, B, C, H, W]."""

    def __init__(self, backend: str):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)
        self.lif = LIF(backend=backend)
        self.plif = PLIF(decay=0.6, reset="soft", surrogate=Sigmoid(), backend=backend)

    def forward(self, x):
        T, B = x.shape[:2]
        s = self.lif(self.conv1(x.flatten(0, 1)).unflatten(0, (T, B)))
        return self.plif(self.conv2(s.flatten(0, 1)).unflatten(0, (T, B)) * 2.0)


def outputs_and_grads(net, x, g):
    x = x.detach().requires_grad_()
    out = net(x)
    return out, torch.autograd.grad(out, [x, *net.parameters()], g)


def assert_compiled_matches_eager(backend: str, compiler: str):
    torch.manual_seed(0)
    net = TinySNN(backend)
    x = torch.randn(3, 2, 2, 6, 6) * 1.5 + 0.5
    g = torch.randn(3, 2, 3, 6, 6)
    ref, ref_grads = outputs_and_grads(net, x, g)
    torch._dynamo.reset()
    targets = set()

    def recording(gm, example_inputs):  # what Dynamo traced, then the compiler itself
        targets.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return torch._dynamo.lookup_backend(compiler)(gm, example_inputs)

    out, grads = outputs_and_grads(torch.compile(net, fullgraph=True, backend=recording), x, g)
    # the fused backends reach the graph as the custom op, not as their Python loops
    assert ("spikeguide.lif_forward.default" in targets) == (backend != "torch")
    assert ref.sum() > 0 and (ref == 0).any()  # both branches of the spike
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fullgraph_compile_traces_every_backend_and_matches_eager(backend):
    """Dynamo and AOTAutograd over the fake implementations and the registered backward: a graph
    break fails ``fullgraph=True``; spikes equal eager's, gradients (PLIF's decay too) agree."""
    assert_compiled_matches_eager(backend, "aot_eager")


@NEEDS_CPP
@pytest.mark.slow  # inductor's C++ code generation takes about a minute on a loaded 2-core machine
def test_inductor_compile_of_the_cpp_kernel_matches_eager():
    assert_compiled_matches_eager("compiled", "inductor")


def lif_args(kernel: str, requires_grad: bool):
    x = (torch.randn(3, 2, 5, 4) * 1.5 + 0.5).requires_grad_(requires_grad)
    return x, (0.5, None, 1.0, False, False, "atan", 0.5, requires_grad, kernel)


@pytest.mark.parametrize("kernel", KERNELS)
def test_lif_ops_pass_torch_library_opcheck(kernel):
    """Schema, fake implementation, autograd registration and AOT dispatch of the LIF op."""
    x, args = lif_args(kernel, True)
    torch.library.opcheck(torch.ops.spikeguide.lif_forward.default, (x, *args))
    decay = torch.tensor(0.7, requires_grad=True)  # PLIF's learnable decay, read inside the op
    torch.library.opcheck(torch.ops.spikeguide.lif_forward.default,
                          (x, 0.0, decay, 1.0, True, True, "sigmoid", 0.25, True, kernel))


@pytest.mark.parametrize("kernel", [pytest.param("compiled", marks=NEEDS_CPP),
                                    pytest.param("triton", marks=NEEDS_TRITON)])
def test_recording_op_compiles_without_graph_breaks(kernel):
    x = torch.randn(4, 2, 3, 5) * 1.5 + 0.5
    args = (0.5, 1.0, "hard", False, ATan())
    torch.library.opcheck(torch.ops.spikeguide.lif_record.default,
                          (x, 0.5, None, 1.0, False, False, 3, 0.5, kernel))
    torch._dynamo.reset()
    compiled = torch.compile(lambda c: fused_record(c, *args, kernel), fullgraph=True,
                             backend="aot_eager")
    for got, want in zip(compiled(x), record_eager(x, *args), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_fake_implementations_give_the_kernels_layouts():
    """A channels_last input keeps its layout through the fake implementation, as through the
    kernels (a wrong stride here would make compiled code read the spikes in the wrong order)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = torch.randn(2, 3, 4, 5, 6).permute(0, 1, 3, 4, 2)  # [T, B, H, W, C] viewed from NHWC
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(real)
        spikes, h = torch.ops.spikeguide.lif_forward(fake, 0.5, None, 1.0, False, False, "atan",
                                                     0.5, True, "fused")
        _, counts, elig = torch.ops.spikeguide.lif_record(fake, 0.5, None, 1.0, False, False, 3,
                                                          0.5, "fused")
    eager = torch.ops.spikeguide.lif_forward(real, 0.5, None, 1.0, False, False, "atan", 0.5,
                                             True, "fused")[0]
    assert spikes.stride() == eager.stride() == real.stride() and h.shape == (2, 3 * 4 * 5 * 6)
    assert counts.dtype == torch.uint8 and counts.stride() == elig.stride() == real.stride()[1:]


def train_with_compile(tmp_path, monkeypatch, mode: str, compiler):
    """Weights after two steps of the tiny run with ``train.compile = mode``, torch.compile
    replaced by ``compiler(model, mode)``."""
    from spikeguide.training import compile as compile_module
    from spikeguide.training.run import train

    monkeypatch.setattr(compile_module.torch, "compile", compiler)
    torch._dynamo.reset()
    cfg = parse_config(tiny_config(tmp_path, name=mode, train={"epochs": 1, "compile": mode}))
    train(cfg, max_steps=2)
    return load_checkpoint(cfg.run_dir / "latest.pt")["model"]


def test_train_compile_hands_the_engine_to_torch_compile_with_its_mode(tmp_path, monkeypatch,
                                                                       caplog):
    compiled = []

    def record(model, mode=None):
        compiled.append((type(model).__name__, mode))
        return model

    with caplog.at_level(logging.INFO, logger="spikeguide"):
        train_with_compile(tmp_path, monkeypatch, "none", record)
        train_with_compile(tmp_path, monkeypatch, "reduce-overhead", record)
    assert compiled == [("BPTT", "reduce-overhead")]
    assert sum("train.compile = reduce-overhead" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.slow  # about 45 s on a loaded 2-core machine
def test_compiled_training_steps_train_as_eager_ones(tmp_path, monkeypatch):
    """AOTAutograd without code generation (inductor itself is covered above)."""
    real_compile = torch.compile
    eager = train_with_compile(tmp_path, monkeypatch, "none", None)
    compiled = train_with_compile(tmp_path, monkeypatch, "default",
                                  lambda model, mode=None: real_compile(model, backend="aot_eager"))
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, atol=1e-5, rtol=1e-4)


def test_unknown_compile_mode_is_a_one_line_error(tmp_path):
    with pytest.raises(SpikeguideError, match="train.compile.*reduce-overhead"):
        parse_config(tiny_config(tmp_path, train={"compile": "fast"}))
