"""Input pipeline throughput against the training step it has to feed, and streaming memory.

Three measurements (docs/data.md lists the commands and the figures):

``stream``: the streaming loader on a generated ImageNet-like tree (JPEGs of varied sizes around
500x375, quality 90): images per second of whole epochs at 224 px (random-resized-crop + flip
in the workers, as the ImageNet recipes train) for each worker count and decoder, whether the
decoders give the same pixels, and the training step rate of a spiking resnet34 T=4 at 224 px,
batch 32, beside it.

    python benchmarks/data.py stream [--files 2000] [--workers 0 1 2] [--train-steps 2]

``rss``: peak resident memory of one streaming epoch over trees of 1,000 and 20,000 files (hard
links to a pool of generated JPEGs), each in a fresh process: it must not grow with the files.

    python benchmarks/data.py rss [--files 1000 20000] [--workers 2]

``memory``: the in-memory path as CIFAR-10 uses it (a cached JPEG copy, crop 4, flip, cutout
16, batch 128) against a resnet20 T=4 step; the pipeline should run at least 20x the step.

    python benchmarks/data.py memory --root data/CIFAR-10-images-jpg

Small sizes check that it runs: ``stream --files 64 --size 96 --crop 64 --model resnet20``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import load_average, machine, sync
from spikeguide.data import Augment, InMemoryLoader, build_dataset, make_loader, open_dataset
from spikeguide.data.decode import RandomResizedCrop, simplejpeg
from spikeguide.data.loader import mix_seed

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CLASSES = 10


# ------------------------------------------------------------------------------- the machine


def print_table(device: torch.device, rows: list[tuple[str, str]]) -> None:
    width = max(len("measurement"), *(len(k) for k, _ in rows))
    value_width = max(len("value"), *(len(v) for _, v in rows))
    print(f"machine: {machine(device)}; device {device}; load average {load_average()}\n")
    print(f"| {'measurement':<{width}} | {'value':>{value_width}} |")
    print(f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value:>{value_width}} |")


# ------------------------------------------------------------------------------- the tree


def jpeg_tree(folder: Path, files: int, size: int, seed: int = 0) -> Path:
    """``folder/train/<class>/*.JPEG``: ``files`` JPEGs (quality 90) about ``size`` x 3/4 size
    pixels (width 0.8-1.2x, aspect 0.6-0.9), smooth colour fields plus grain, so that they
    compress about as photos do. Reused when ``folder`` already holds the same tree."""
    stamp = folder / "tree.json"
    spec = {"files": files, "size": size, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == spec:
        return folder
    rng = np.random.default_rng(seed)
    grain = rng.normal(0, 20, (2 * size, 2 * size, 1)) + rng.normal(0, 10, (2 * size, 2 * size, 3))
    for i in range(files):
        w = int(size * rng.uniform(0.8, 1.2))
        h = int(w * rng.uniform(0.6, 0.9))
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float64)
        top, left = rng.integers(0, 2 * size - h + 1), rng.integers(0, 2 * size - w + 1)
        pixels = np.clip(base + grain[top:top + h, left:left + w], 0, 255).astype(np.uint8)
        path = folder / "train" / f"class{i % CLASSES}" / f"{i}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, "JPEG", quality=90)
    stamp.write_text(json.dumps(spec))
    return folder


def linked_tree(pool: Path, folder: Path, files: int) -> Path:
    """``files`` hard links to the JPEGs of ``pool`` in ``folder/train/<class>/``."""
    sources = sorted(pool.glob("train/*/*.JPEG"))
    if (folder / "train").is_dir() and len(list(folder.glob("train/*/*.JPEG"))) == files:
        return folder
    for i in range(files):
        path = folder / "train" / f"class{i % CLASSES}" / f"{i}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.link(sources[i % len(sources)], path)
    return folder


def read_all(folder: Path) -> None:
    """Read every file once, so that timings start from the page cache, not the disk."""
    for path in folder.glob("train/*/*"):
        path.read_bytes()


# ------------------------------------------------------------------------------- stream


def stream_throughput(tree: Path, workers: int, decoder: str, crop: int, batch: int,
                      epochs: int) -> float:
    """Images per second of whole training epochs (best one): workers started, every batch
    decoded, random-resized-crop + flip, uint8 batches handed over."""
    files = open_dataset("imagefolder", tree, "train", crop=crop, resize=crop,
                         decoder=decoder, workers=workers)
    loader = make_loader(files, batch, shuffle=True, drop_last=True,
                         random_crop=RandomResizedCrop(flip=True))
    best = float("inf")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        start = time.perf_counter()
        for _ in loader:
            pass
        best = min(best, time.perf_counter() - start)
    return len(loader) * batch / best


def same_pixels(tree: Path, crop: int) -> str:
    """How many files the two decoders turn into identical training samples."""
    if simplejpeg is None:
        return "simplejpeg not installed"
    pillow = open_dataset("imagefolder", tree, "train", crop=crop, decoder="pillow")
    fast = open_dataset("imagefolder", tree, "train", crop=crop, decoder="simplejpeg")
    crop_op = RandomResizedCrop(flip=True)
    equal = sum(np.array_equal(pillow.read(i, crop_op, mix_seed(0, i)),
                               fast.read(i, crop_op, mix_seed(0, i))) for i in range(len(fast)))
    return f"{equal}/{len(fast)} files"


def train_step_throughput(model_name: str, T: int, width: float, size: int, classes: int,
                          device: torch.device, batch_size: int, steps: int) -> float:
    """Images per second of full training steps (one warm-up step not counted): forward,
    cross-entropy, backward and an SGD step of the model's SNN (its default stem)."""
    from spikeguide.models import create_model

    model = create_model(model_name, num_classes=classes, in_channels=3, spiking=True, T=T,
                         width=width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch_size, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch_size,), device=device)
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


def cmd_stream(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    tree = jpeg_tree(Path(args.tree), args.files, args.size)
    read_all(tree)
    decoders = ["pillow"] + (["simplejpeg"] if simplejpeg is not None else [])
    rows = [("tree", f"{args.files} JPEGs, ~{args.size}x{args.size * 3 // 4}, q90"),
            ("same pixels, pillow and simplejpeg", same_pixels(tree, args.crop))]
    fastest = 0.0
    for decoder in decoders:
        for workers in args.workers:
            rate = stream_throughput(tree, workers, decoder, args.crop, args.batch, args.epochs)
            fastest = max(fastest, rate)
            per_worker = f", {rate / workers:,.0f} per worker" if workers else ""
            rows.append((f"stream {args.crop} px, {decoder}, {workers} workers (img/s)",
                         f"{rate:,.0f}{per_worker}"))
    if args.train_steps:
        step = train_step_throughput(args.model, args.T, args.width, args.crop, 1000, device,
                                     args.batch, args.train_steps)
        rows += [(f"train step: {args.model} SNN T={args.T} at {args.crop} px, batch {args.batch} "
                  "(img/s)", f"{step:,.1f}"),
                 ("fastest stream / train step", f"{fastest / step:,.1f}x")]
    print_table(device, rows)


# ------------------------------------------------------------------------------- rss


def epoch_peak_rss(tree: Path, workers: int, crop: int, batch: int) -> dict[str, float]:
    """One training epoch of the streaming loader in this (fresh) process: peak RSS in MB of
    this process and of its largest worker."""
    files = open_dataset("imagefolder", tree, "train", crop=crop, resize=crop, workers=workers)
    loader = make_loader(files, batch, shuffle=True, drop_last=True,
                         random_crop=RandomResizedCrop(flip=True))
    for _ in loader:
        pass
    kb = 1024 if sys.platform == "darwin" else 1  # ru_maxrss is bytes on macOS, KiB on Linux
    return {"files": len(files),
            "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb / 1024,
            "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kb / 1024}


def cmd_rss(args: argparse.Namespace) -> None:
    pool = jpeg_tree(Path(args.tree) / "pool", args.pool, args.size)
    results = []
    for count in args.files:
        tree = linked_tree(pool, Path(args.tree) / f"links{count}", count)
        child = subprocess.run(
            [sys.executable, __file__, "rss-epoch", str(tree), str(args.workers), str(args.crop),
             str(args.batch)], capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    rows = []
    for r in results:
        rows.append((f"peak RSS, {r['files']:,} files: main process (MB)", f"{r['main_mb']:.0f}"))
        rows.append((f"peak RSS, {r['files']:,} files: largest worker (MB)", f"{r['worker_mb']:.0f}"))
    first, last = results[0], results[-1]
    for key, name in (("main_mb", "main"), ("worker_mb", "worker")):
        rows.append((f"{name}: {last['files']:,} against {first['files']:,} files",
                     f"{100 * (last[key] / first[key] - 1):+.1f}%"))
    print_table(torch.device("cpu"), rows)


# ------------------------------------------------------------------------------- memory


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


def cmd_memory(args: argparse.Namespace) -> None:
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
        step = train_step_throughput(args.model, args.T, 1.0, 32, 10, device, args.batch,
                                     args.train_steps)
        rows += [
            (f"train step: {args.model} SNN T={args.T}, fwd + CE + bwd + SGD", f"{step:,.0f} img/s"),
            ("pipeline / train step (target >= 20x)", f"{pipeline / step:,.0f}x"),
        ]
    print_table(device, rows)


# ------------------------------------------------------------------------------- command line


def main() -> None:
    if sys.argv[1:2] == ["rss-epoch"]:  # the fresh process of one rss measurement
        tree, workers, crop, batch = sys.argv[2:6]
        print(json.dumps(epoch_peak_rss(Path(tree), int(workers), int(crop), int(batch))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stream", help="streaming loader images/s against the training step")
    p.add_argument("--tree", default="data/bench-jpeg-tree", help="where the tree is generated")
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--size", type=int, default=500, help="mean image width in pixels")
    p.add_argument("--crop", type=int, default=224, help="training crop size")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="epochs timed per setting (best counts)")
    p.add_argument("--model", default="resnet34")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--train-steps", type=int, default=2, help="0 skips the training step")
    p.set_defaults(fn=cmd_stream)

    p = sub.add_parser("rss", help="peak RSS of a streaming epoch against the number of files")
    p.add_argument("--tree", default="data/bench-rss-tree")
    p.add_argument("--files", type=int, nargs="+", default=[1000, 20000])
    p.add_argument("--pool", type=int, default=200, help="distinct JPEGs the links point to")
    p.add_argument("--size", type=int, default=500)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.set_defaults(fn=cmd_rss)

    p = sub.add_parser("memory", help="in-memory CIFAR-10 pipeline against a resnet20 step")
    p.add_argument("--root", default="data/CIFAR-10-images-jpg")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3, help="pipeline epochs timed")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--train-steps", type=int, default=3, help="0 skips the training step")
    p.set_defaults(fn=cmd_memory)

    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
