"""Training throughput of spikeguide's neuron backends against SpikingJelly, on one architecture.

A training step is forward + cross-entropy + backward + SGD step on random 32x32 images. Every
contender trains the same network with the same initial weights: the SpikingJelly model is a
module-by-module translation of the spikeguide model (``layer.Conv2d/BatchNorm2d`` in multi-step
mode, ``neuron.LIFNode(step_mode="m")`` with the same dynamics, the static image repeated over T
as SpikingJelly's examples do, ``functional.reset_net`` after each step). Contenders are timed in
interleaved rounds and the best round counts, so that load from other processes shows up as
spread (median beside best) rather than as a bias against one contender.

    python benchmarks/speed.py --models resnet20 --width 0.5 --batch 32 --T 1 2 4 \
        --formats contiguous channels_last
    python benchmarks/speed.py --layer 524288 --T 4 --threads 1 --with-compile

Needs ``spikingjelly`` for the reference column (``pip install --no-deps spikingjelly loguru
h5py``); without it only spikeguide's backends are timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

from spikeguide.models import SpikingNet, create_model
from spikeguide.models.layers import TimeSequential
from spikeguide.models.resnet import BasicBlock
from spikeguide.neurons import LIF
from spikeguide.neurons.kernels import BACKENDS
from spikeguide.neurons.surrogates import ATan

# --------------------------------------------------------------------------------------------
# The SpikingJelly twin
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def make_step(model: nn.Module, x, y, reset_net=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if reset_net is not None:
            reset_net(model)

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_contenders(steps: dict, batch: int, rounds: int, iters: int, device) -> dict:
    """img/s of every round for every contender, rounds interleaved."""
    for step in steps.values():  # warm-up: builds, autotuning, allocator
        step(), step()
    rates = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                step()
            sync(device)
            rates[name].append(batch * iters / (time.perf_counter() - start))
    return rates


def machine(device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), platform.processor())
        what += f", {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{what}; torch {torch.__version__}; Python {platform.python_version()}"


def layer_benchmark(T: int, N: int, backends, rounds: int, iters: int, with_compile: bool):
    """Milliseconds for forward + backward of one LIF layer on ``[T, N]`` currents."""
    from spikeguide.neurons.kernels.fused import TorchLoops, fused_lif

    x = torch.randn(T, N).requires_grad_()
    g = torch.randn(T, N)
    neurons = {b: LIF(decay=0.5, threshold=1.0, reset="hard", surrogate=ATan(), backend=b)
               for b in backends}
    runs = {b: (lambda b=b: neurons[b](x)) for b in backends}
    if with_compile:  # torch.compile of the fused backend's two loops, for comparison
        class CompiledLoops(TorchLoops):
            forward = torch.compile(TorchLoops.forward, dynamic=False)
            backward = torch.compile(TorchLoops.backward, dynamic=False)

        loops = CompiledLoops()
        start = time.perf_counter()
        fused_lif(x, 0.5, 1.0, "hard", False, ATan(), loops).backward(g)
        print(f"# torch.compile: first call {time.perf_counter() - start:.1f} s")
        runs["torch.compile(fused loops)"] = lambda: fused_lif(x, 0.5, 1.0, "hard", False, ATan(), loops)
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(iters):
                run().backward(g)
            times[name].append((time.perf_counter() - start) / iters * 1e3)
    print(f"| LIF layer [{T}, {N}] | ms (best) | ms (median) |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {min(t):.2f} | {statistics.median(t):.2f} |")


FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def contenders(name, T, args, device, sj_functional):
    """name -> training step, for every backend and memory format; the SpikingJelly twin(s)."""
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    steps = {}
    for fmt in args.formats:
        xf = x.to(memory_format=FORMATS[fmt])
        for backend in args.backends:
            torch.manual_seed(0)
            net = create_model(name, width=args.width, T=T, neuron_options={"backend": backend})
            steps[f"spikeguide {backend}, {fmt}"] = make_step(
                net.to(device, memory_format=FORMATS[fmt]), xf, y)
        if sj_functional is None:
            continue
        sj = spikingjelly_twin(net).to(device, memory_format=FORMATS[fmt])
        with torch.no_grad():
            diff = (net.eval()(xf) - sj.eval()(xf)).abs().max().item()
        sj_functional.reset_net(sj)
        net.train(), sj.train()
        print(f"# {name} T={T} {fmt}: parameters spikeguide {sum(p.numel() for p in net.parameters()):,}, "
              f"spikingjelly {sum(p.numel() for p in sj.parameters()):,}; max |logit difference| in "
              f"eval mode {diff:.2e}")
        backend = "torch" if device.type == "cpu" else "auto"
        steps[f"spikingjelly {backend}, {fmt}"] = make_step(sj, xf, y, sj_functional.reset_net)
    return steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet20"])
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--backends", nargs="+", default=["torch", "fused", "compiled"], choices=BACKENDS)
    p.add_argument("--formats", nargs="+", default=["contiguous"], choices=list(FORMATS),
                   help="memory formats to run every contender in")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-spikingjelly", action="store_true")
    p.add_argument("--layer", type=int, metavar="N",
                   help="time one LIF layer on [T, N] currents instead of whole networks")
    p.add_argument("--with-compile", action="store_true",
                   help="with --layer: also torch.compile the fused loops")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.layer:
        print(f"# {machine(device)}; load average {tuple(round(v, 2) for v in os.getloadavg())}")
        for T in args.T:
            layer_benchmark(T, args.layer, args.backends, args.rounds, args.iters, args.with_compile)
        return
    sj_functional = None
    if not args.no_spikingjelly:
        try:
            from spikingjelly.activation_based import functional as sj_functional
        except ImportError:
            print("# spikingjelly is not installed: timing spikeguide only")

    print(f"# {machine(device)}")
    print(f"# batch {args.batch}, 32x32 inputs, width {args.width}, best of {args.rounds} rounds of "
          f"{args.iters} steps; load average at start {tuple(round(v, 2) for v in os.getloadavg())}")
    print("| model | T | contender | img/s (best) | img/s (median) | ratio vs fastest spikingjelly |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        for T in args.T:
            steps = contenders(name, T, args, device, sj_functional)
            rates = time_contenders(steps, args.batch, args.rounds, args.iters, device)
            ref = max((max(r) for k, r in rates.items() if k.startswith("spikingjelly")), default=None)
            for contender, r in rates.items():
                ratio = f"{max(r) / ref:.2f}" if ref else "-"
                print(f"| {name} | {T} | {contender} | {max(r):.1f} | {statistics.median(r):.1f} | "
                      f"{ratio} |", flush=True)
    print(f"# load average at end {tuple(round(v, 2) for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
