"""Input pipeline throughput against the training step it has to feed.

The pipeline is what the Trainer runs per batch: ``InMemoryLoader`` indexing a cached
CIFAR-10 (JPEG q75 copy) split, then ``Augment`` (crop 4, flip, cutout 16, normalisation) with
a generator seeded from (seed, epoch, step). The training step is forward, cross-entropy,
backward and an SGD step of an SNN from ``spikeguide.models.create_model`` (resnet20, T=4) on
batches of the same size. The pipeline should run at least 20x faster than the step.

    mkdir -p data && tar -xzf ../shared/data/cifar10-jpeg-q75.tar.gz -C data
    python benchmarks/data.py --root data/CIFAR-10-images-jpg [--device cuda] [--train-steps 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from spikeguide.data import Augment, InMemoryLoader, build_dataset
from spikeguide.data.loader import mix_seed

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def machine(device: torch.device) -> list[tuple[str, str]]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rows = [("cpu", cpu), ("cores", str(os.cpu_count())), ("torch threads", str(torch.get_num_threads())),
            ("torch", torch.__version__), ("device", str(device))]
    if device.type == "cuda":
        rows.append(("gpu", torch.cuda.get_device_name(device)))
    return rows


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline_throughput(dataset, device: torch.device, batch_size: int, epochs: int) -> float:
    """Images per second of loader + augmentation over whole epochs (best epoch counts)."""
    loader = InMemoryLoader(dataset, batch_size, shuffle=True, drop_last=True, device=device)
    augment = Augment(crop_padding=4, flip=True, cutout=16, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    best = float("inf")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        sync(device)
        start = time.perf_counter()
        for step, (x, _) in enumerate(loader):
            augment(x, torch.Generator().manual_seed(mix_seed(0, epoch, step)))
        sync(device)
        best = min(best, time.perf_counter() - start)
    return len(loader) * batch_size / best


def train_step_throughput(model_name: str, T: int, device: torch.device, batch_size: int,
                          steps: int) -> float:
    """Images per second of full training steps (one warm-up step not counted)."""
    from spikeguide.models import create_model

    model = create_model(model_name, num_classes=10, in_channels=3, spiking=True, T=T).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    for step in range(steps + 1):
        if step == 1:
            sync(device)
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data/CIFAR-10-images-jpg")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="pipeline epochs timed")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=3, help="0 skips the training step")
    args = parser.parse_args()
    device = torch.device(args.device)

    start = time.perf_counter()
    build_dataset("imagefolder", args.root, "train")  # decodes and caches on the very first run
    first = time.perf_counter() - start
    start = time.perf_counter()
    train = build_dataset("imagefolder", args.root, "train")
    cached = time.perf_counter() - start

    pipeline = pipeline_throughput(train, device, args.batch, args.epochs)
    rows = [
        (f"build_dataset, first call ({len(train):,} images)", f"{first:.2f} s"),
        ("build_dataset, from cache", f"{cached:.2f} s"),
        (f"pipeline: loader + augment (crop 4, flip, cutout 16), batch {args.batch}",
         f"{pipeline:,.0f} img/s"),
    ]
    if args.train_steps:
        step = train_step_throughput(args.model, args.T, device, args.batch, args.train_steps)
        rows += [
            (f"train step: {args.model} SNN T={args.T}, fwd + CE + bwd + SGD", f"{step:,.0f} img/s"),
            ("pipeline / train step (target >= 20x)", f"{pipeline / step:,.0f}x"),
        ]
    width = max(len(k) for k, _ in machine(device) + rows)
    for key, value in machine(device):
        print(f"{key:<{width}}  {value}")
    print()
    print(f"| {'measurement':<{width}} | {'value':>14} |")
    print(f"|{'-' * (width + 2)}|{'-' * 16}|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value:>14} |")


if __name__ == "__main__":
    main()
