"""Pieces the benchmarks share: the machine, device sync, timed training steps of whole networks,
and the SpikingJelly twin of a spikeguide network.

A training step is forward + cross-entropy + backward + SGD step (momentum 0.9). Every contender
of one comparison trains the same network with the same initial weights; the SpikingJelly twin
is a module-by-module translation of the spikeguide model (``layer.Conv2d/BatchNorm2d`` in
multi-step mode, ``neuron.LIFNode(step_mode="m")`` with the same dynamics, the static image
repeated over T as SpikingJelly's examples do, ``functional.reset_net`` after each step).
"""

from __future__ import annotations

import os
import platform
import time
from contextlib import nullcontext
from typing import Callable

import torch
from torch import nn

from spikeguide.models import SpikingNet, create_model
from spikeguide.models.attention import SpikingSelfAttention
from spikeguide.models.layers import TimeSequential
from spikeguide.models.resnet import BasicBlock
from spikeguide.neurons import LIF
from spikeguide.neurons.surrogates import ATan

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # None: no autocast


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(device: torch.device) -> str:
    """One line: the processor or GPU, torch, Python."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{what}; torch {torch.__version__}; Python {platform.python_version()}"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None):
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              reset_net: Callable[[nn.Module], None] | None = None,
              amp_dtype: torch.dtype | None = None) -> Callable[[], None]:
    """One SGD training step of ``model`` on the fixed batch ``(x, y)`` (autocast to
    ``amp_dtype`` when given); ``reset_net`` clears a stateful model's membranes afterwards."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    device = x.device

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if reset_net is not None:
            reset_net(model)

    return step


def time_rounds(calls: dict[str, Callable[[], object]], rounds: int, iters: int,
                device: torch.device, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call, one figure per round, for every entry of ``calls``. Rounds interleave
    the entries, so that load from other processes shows as spread rather than as a bias
    against one of them."""
    for call in calls.values():  # builds, autotuning, the allocator's first blocks
        for _ in range(warmup):
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                call()
            sync(device)
            seconds[name].append((time.perf_counter() - start) / iters)
    return seconds


def time_contenders(steps: dict[str, Callable[[], None]], batch: int, rounds: int, iters: int,
                    device: torch.device, warmup: int = 2) -> dict[str, list[float]]:
    """Images per second of every round for every training step (see :func:`time_rounds`)."""
    return {name: [batch / s for s in per_round]
            for name, per_round in time_rounds(steps, rounds, iters, device, warmup).items()}


def lif_layer_calls(T: int, N: int, backends, device: torch.device,
                    dtype: torch.dtype = torch.float32
                    ) -> tuple[dict[str, Callable[[], None]], torch.Tensor, torch.Tensor]:
    """Forward + backward of one LIF layer (hard reset, ATan) on random ``[T, N]`` currents of
    ``dtype``, one call per backend; and the currents and upstream gradient they use."""
    x = torch.randn(T, N, device=device).to(dtype).requires_grad_()
    g = torch.randn(T, N, device=device).to(dtype)

    def call(neuron: LIF) -> Callable[[], None]:
        return lambda: neuron(x).backward(g)

    calls = {b: call(LIF(decay=0.5, threshold=1.0, reset="hard", surrogate=ATan(), backend=b))
             for b in backends}
    return calls, x, g


# --------------------------------------------------------------------------------------------
# The SpikingJelly twin
# --------------------------------------------------------------------------------------------


def import_spikingjelly():
    """SpikingJelly's ``functional`` module, or None when it does not import here."""
    try:
        from spikingjelly.activation_based import functional
    except ImportError:
        return None
    return functional


def spikingjelly_implementation(sj_functional, device: torch.device) -> str:
    """The LIF implementation SpikingJelly runs on ``device`` (on CUDA its choice among its
    native CUDA, Triton and torch implementations; ``SJ_LIF_CUDA_IMPLEMENTATION`` forces one)."""
    return sj_functional.neuron_implementation("lif", device)["implementation"]


class SJBlock(nn.Module):
    def __init__(self, residual, shortcut, act):
        super().__init__()
        self.residual, self.shortcut, self.act = residual, shortcut, act

    def forward(self, x):
        return self.act(self.residual(x) + self.shortcut(x))


class SJNet(nn.Module):
    def __init__(self, net: SpikingNet, translate):
        super().__init__()
        self.T = net.T
        self.encoder = translate(net.encoder)
        self.stem = translate(net.stem)
        self.stages = nn.Sequential(*[translate(s) for s in net.stages])
        self.pool = translate(net.pool)
        self.classifier = translate(net.classifier)

    def forward(self, x):
        x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        h = self.stages(self.stem(self.encoder(x_seq)))
        return self.classifier(self.pool(h)).mean(0)


def spikingjelly_twin(net: SpikingNet) -> nn.Module:
    """The same network in SpikingJelly's multi-step modules, with the same weights."""
    from spikingjelly.activation_based import layer, neuron, surrogate

    def translate(m: nn.Module) -> nn.Module:
        if isinstance(m, (TimeSequential, nn.Sequential)):
            return nn.Sequential(*[translate(c) for c in m])
        if isinstance(m, BasicBlock):
            return SJBlock(translate(m.residual), translate(m.shortcut), translate(m.act))
        if isinstance(m, LIF):
            if type(m.surrogate) is not ATan or type(m) is not LIF:
                raise ValueError("the SpikingJelly twin is written for LIF neurons with ATan")
            return neuron.LIFNode(
                tau=1 / (1 - float(m.decay)), decay_input=False, v_threshold=m.threshold,
                v_reset=0.0 if m.reset == "hard" else None, detach_reset=m.detach_reset,
                surrogate_function=surrogate.ATan(alpha=1 / m.surrogate.width), step_mode="m")
        if isinstance(m, nn.Conv2d):
            new = layer.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                               bias=m.bias is not None, step_mode="m")
        elif isinstance(m, nn.BatchNorm2d):
            new = layer.BatchNorm2d(m.num_features, step_mode="m")
        elif isinstance(m, nn.AvgPool2d):
            new = layer.AvgPool2d(m.kernel_size, m.stride, step_mode="m")
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            new = layer.AdaptiveAvgPool2d(m.output_size, step_mode="m")
        elif isinstance(m, nn.Flatten):
            new = layer.Flatten(step_mode="m")
        elif isinstance(m, nn.Linear):
            new = layer.Linear(m.in_features, m.out_features, step_mode="m")
        elif isinstance(m, nn.Identity):
            return nn.Identity()
        else:
            raise ValueError(f"no SpikingJelly translation for {type(m).__name__}")
        new.load_state_dict(m.state_dict())
        return new

    return SJNet(net, translate)


class MeanOverTime(nn.Module):
    """A SpikingJelly multi-step model's ``[T, B, K]`` outputs averaged over T, as its examples do."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).mean(0)


def spikingjelly_spikformer(net: SpikingNet) -> nn.Module:
    """SpikingJelly's own Spikformer (``model.spikformer``; its ``spikformer_cifar10`` at width 1)
    at the depth, width and heads of our ``spikformer``. Attention has no module-by-module
    translation, so this is SpikingJelly's implementation of the same architecture, not a twin."""
    from spikingjelly.activation_based.model.spikformer import Spikformer

    attention = [m for m in net.modules() if isinstance(m, SpikingSelfAttention)]
    dim = net.classifier.in_features
    return MeanOverTime(Spikformer(T=net.T, img_size_h=32, img_size_w=32, patch_size=4,
                                   num_classes=net.classifier.out_features, embed_dims=dim,
                                   num_heads=attention[0].heads, mlp_ratio=4.0,
                                   depths=len(attention)))


# --------------------------------------------------------------------------------------------
# Contenders: one network, several implementations
# --------------------------------------------------------------------------------------------


def batch_for(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 32x32 images and labels, the same for every contender."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    return x.to(device), y.to(device)


def spikeguide_net(name: str, T: int, width: float, backend: str, device: torch.device,
                   fmt: str, fuse_bn: str = "auto", spiking: bool = True) -> SpikingNet:
    torch.manual_seed(0)  # the same initial weights for every contender
    net = create_model(name, width=width, T=T, neuron_options={"backend": backend},
                       fuse_bn=fuse_bn, spiking=spiking)
    return net.to(device, memory_format=FORMATS[fmt])


def spikingjelly_precision(model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None):
    """SpikingJelly's bf16 setting as its docs give it: its precision API
    (``prepare_model_for_precision`` with a ``PrecisionConfig``, before the optimizer is built).
    On CUDA the neurons keep bf16 state with float32 arithmetic on its Triton path
    (``neuron_storage="bf16"``); that path needs CUDA, so on CPU only ``mode="bf16"`` is set.
    Returns the prepared artifacts, or None for float32 (no precision API involved)."""
    if amp_dtype is None:
        return None
    if amp_dtype is not torch.bfloat16:
        raise ValueError("the SpikingJelly twin is timed in float32 or bf16")
    from spikingjelly.activation_based.precision import PrecisionConfig, prepare_model_for_precision

    neurons = (dict(neuron_storage="bf16", neuron_fwd="fp32", neuron_bwd="fp32")
               if device.type == "cuda" else {})
    return prepare_model_for_precision(model, device, PrecisionConfig(mode="bf16", **neurons))


def spikingjelly_step(net: SpikingNet, x: torch.Tensor, y: torch.Tensor, fmt: str,
                      sj_functional, amp_dtype: torch.dtype | None = None
                      ) -> tuple[Callable[[], None], str]:
    """The training step of ``net``'s SpikingJelly twin, or of SpikingJelly's own Spikformer for
    our ``spikformer`` (:func:`spikingjelly_spikformer`), (in bf16 through SpikingJelly's precision
    API, :func:`spikingjelly_precision`), and a line comparing the two networks (parameters, and
    :func:`twin_difference` of float32 copies)."""
    counts = f"parameters spikeguide {sum(p.numel() for p in net.parameters()):,}, spikingjelly "
    if any(isinstance(m, SpikingSelfAttention) for m in net.modules()):
        sj = spikingjelly_spikformer(net).to(x.device, memory_format=FORMATS[fmt])
        line = (counts + f"{sum(p.numel() for p in sj.parameters()):,}; SpikingJelly's own "
                "Spikformer at the same depth, width and heads (its neurons and initial weights, "
                "not a twin: outputs not compared)")
    else:
        sj = spikingjelly_twin(net).to(x.device, memory_format=FORMATS[fmt])
        line = (counts + f"{sum(p.numel() for p in sj.parameters()):,}; "
                + twin_difference(net, sj, x, y, sj_functional))
    precision = spikingjelly_precision(sj, x.device, amp_dtype)
    if precision is None:
        return make_step(sj, x, y, sj_functional.reset_net), line
    model = precision.model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        with precision.autocast_context():
            loss = nn.functional.cross_entropy(model(x), y)
        precision.backward(loss, opt)
        sj_functional.reset_net(model)

    return step, line


def twin_difference(net: nn.Module, sj: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    sj_functional) -> str:
    """How far apart the two networks train, in float32 and train mode: logits and parameter
    gradients of the first step and of the step after one SGD update (lr 0.1), on copies (the
    networks passed in are left as they are). Untrained networks in eval mode would compare
    little: there, every LIF after the first is usually silent."""
    import copy

    ours, theirs = copy.deepcopy(net).train(), copy.deepcopy(sj).train()
    pairs = list(zip(ours.parameters(), theirs.parameters()))
    if any(a.shape != b.shape for a, b in pairs):
        return "twin check: the parameters are not in the same order (not compared)"
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (ours, theirs)]
    firing = []
    hooks = [m.register_forward_hook(lambda mod, i, out: firing.append(bool(out.any())))
             for m in ours.modules() if isinstance(m, LIF)]
    parts = []
    for when in ("first step", "after one step"):
        firing.clear()
        outs = []
        for model, opt in zip((ours, theirs), opts):
            opt.zero_grad(set_to_none=True)
            out = model(x)
            nn.functional.cross_entropy(out, y).backward()
            outs.append(out.detach())
        sj_functional.reset_net(theirs)
        grad_error = max(float((a.grad - b.grad).norm() / b.grad.norm().clamp_min(1e-30))
                         for a, b in pairs if b.grad is not None)
        logit_difference = (outs[0] - outs[1]).abs().max().item()
        parts.append(f"{when}: max |logit difference| {logit_difference:.2e}, "
                     f"largest relative gradient difference {grad_error:.2e}, "
                     f"{sum(firing)}/{len(firing)} LIF layers fire")
        for opt in opts:
            opt.step()
    for hook in hooks:
        hook.remove()
    return "twin check in train mode: " + "; ".join(parts)
