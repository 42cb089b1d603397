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
    python benchmarks/speed.py --layer 2097152 --T 2 --backends compiled --precisions fp32 bf16
    python benchmarks/speed.py --T 4 --backends compiled --formats channels_last --threads 1 \
        --fuse-bn auto false
    python benchmarks/speed.py --T 2 --width 0.25 --batch 64 --backends compiled \
        --formats channels_last --precisions fp32 bf16 --threads 2 --with-ann

Needs SpikingJelly for the reference column (``pip install --no-deps spikingjelly==2.0.0
"loguru>=0.7,<1"``: without ``--no-deps`` pip would replace the installed torch); without it only
spikeguide's backends are timed. The shared pieces (the twin, the timed steps) are in
``common.py``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from common import (
    FORMATS,
    PRECISIONS,
    batch_for,
    import_spikingjelly,
    lif_layer_calls,
    load_average,
    machine,
    make_step,
    spikeguide_net,
    spikingjelly_implementation,
    spikingjelly_step,
    time_contenders,
    time_rounds,
)
from spikeguide.neurons import LIF
from spikeguide.neurons.kernels import BACKENDS
from spikeguide.neurons.surrogates import ATan


def layer_benchmark(T: int, N: int, backends, rounds: int, iters: int, with_compile: bool,
                    dtype: torch.dtype = torch.float32):
    """Milliseconds for forward + backward of one LIF layer on ``[T, N]`` currents of ``dtype``."""
    device = torch.device("cpu")
    runs, x, g = lif_layer_calls(T, N, backends, device, dtype)
    if with_compile:  # torch.compile of the reference loop, for comparison
        lif = torch.compile(LIF(decay=0.5, threshold=1.0, reset="hard", surrogate=ATan(),
                                backend="torch"), fullgraph=True, dynamic=False)
        start = time.perf_counter()
        lif(x).backward(g)
        print(f"# torch.compile: first call {time.perf_counter() - start:.1f} s")
        runs["torch.compile(torch)"] = lambda: lif(x).backward(g)
    times = time_rounds(runs, rounds, iters, device, warmup=1)
    print(f"| LIF layer [{T}, {N}], {dtype} | ms (best) | ms (median) |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {min(t) * 1e3:.2f} | {statistics.median(t) * 1e3:.2f} |")


def contenders(name, T, args, device, sj_functional, precision):
    """name -> training step, for every backend and memory format at ``precision`` (autocast
    dtype or None); the SpikingJelly twin(s) at the same precision."""
    x, y = batch_for(args.batch, device)
    amp = PRECISIONS[precision]
    steps = {}
    for fmt in args.formats:
        xf = x.to(memory_format=FORMATS[fmt])
        for backend in args.backends:
            for fuse in args.fuse_bn:
                net = spikeguide_net(name, T, args.width, backend, device, fmt, fuse)
                label = f", fuse_bn {fuse}" if len(args.fuse_bn) > 1 else ""
                steps[f"spikeguide {backend}, {fmt}{label}, {precision}"] = make_step(
                    net, xf, y, amp_dtype=amp)
        if args.with_ann:  # the ANN twin (ReLU), as a teacher trains
            net_ann = spikeguide_net(name, T, args.width, "auto", device, fmt, spiking=False)
            steps[f"spikeguide ANN twin, {fmt}, {precision}"] = make_step(net_ann, xf, y,
                                                                          amp_dtype=amp)
        if sj_functional is None:
            continue
        label = (f"spikingjelly {spikingjelly_implementation(sj_functional, device)}, {fmt}, "
                 f"{precision}")
        steps[label], line = spikingjelly_step(net, xf, y, fmt, sj_functional, amp)
        print(f"# {name} T={T} {fmt}: {line}")
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
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=list(PRECISIONS),
                   help="fp32, and/or bf16 autocast (SpikingJelly's through its precision API)")
    p.add_argument("--fuse-bn", nargs="+", default=["auto"], choices=["auto", "true", "false"],
                   help="[neuron] fuse_bn settings to run every spikeguide contender with")
    p.add_argument("--with-ann", action="store_true",
                   help="also time the ANN twin (the teacher's network; no ratio is meaningful)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-spikingjelly", action="store_true")
    p.add_argument("--layer", type=int, metavar="N",
                   help="time one LIF layer on [T, N] currents instead of whole networks")
    p.add_argument("--with-compile", action="store_true",
                   help="with --layer: also torch.compile the reference loop")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.layer:
        print(f"# {machine(device)}; load average {load_average()}")
        for T, precision in itertools.product(args.T, args.precisions):
            # the tensors themselves in the precision (bf16 currents, as under autocast)
            dtype = PRECISIONS[precision] or torch.float32
            layer_benchmark(T, args.layer, args.backends, args.rounds, args.iters,
                            args.with_compile, dtype)
        return
    sj_functional = None if args.no_spikingjelly else import_spikingjelly()
    if sj_functional is None and not args.no_spikingjelly:
        print("# spikingjelly is not installed: timing spikeguide only")

    print(f"# {machine(device)}")
    print(f"# batch {args.batch}, 32x32 inputs, width {args.width}, best of {args.rounds} rounds of "
          f"{args.iters} steps; load average at start {load_average()}")
    print("| model | T | contender | img/s (best) | img/s (median) | ratio vs fastest spikingjelly "
          "at the same precision |")
    print("|---|---|---|---|---|---|")
    for name, T in itertools.product(args.models, args.T):
        groups = {precision: contenders(name, T, args, device, sj_functional, precision)
                  for precision in args.precisions}
        # every precision's contenders timed in the same interleaved rounds
        rates = time_contenders({k: v for g in groups.values() for k, v in g.items()},
                                args.batch, args.rounds, args.iters, device)
        for group in groups.values():
            ref = max((max(rates[k]) for k in group if k.startswith("spikingjelly")), default=None)
            for contender in group:
                r = rates[contender]
                ratio = f"{max(r) / ref:.2f}" if ref and "ANN twin" not in contender else "-"
                print(f"| {name} | {T} | {contender} | {max(r):.1f} | "
                      f"{statistics.median(r):.1f} | {ratio} |", flush=True)
    print(f"# load average at end {load_average()}")


if __name__ == "__main__":
    main()
