"""Section 5 (before the training, which reuses its decoded data): the input pipeline.

What is timed is what the Trainer runs per batch: its train loader and its augmentation (crop 4
and flip, on the training device), built from a config through the public training API. The
first ``build_datasets`` decodes the CIFAR-10 JPEG copy with one process per core and caches it;
that time is reported too. Both loaders are timed: the in-memory one and the streaming one
(``[data] loader = "stream"``, decoding in worker processes, one per core up to its default).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from common import sync
from spikeguide.config import parse_config
from spikeguide.training.build import build_datasets
from spikeguide.training.run import build_method
from spikeguide.training.trainer import Trainer

from .context import Context
from .dataset import CIFAR10_MEAN, CIFAR10_STD
from .results import SectionResult
from .timebox import TimeBox

LOADERS = ("memory", "stream")


def data_section(ctx: Context, loader: str = "memory") -> dict[str, Any]:
    """The ``[data]`` table of the CIFAR-10 JPEG copy, as the pipeline and the training use it."""
    data = {"name": "imagefolder", "root": str(ctx.data.root()),
            "batch_size": ctx.sizes.train_batch, "eval_batch_size": ctx.sizes.eval_batch,
            "options": {"mean": CIFAR10_MEAN, "std": CIFAR10_STD,
                        "cache_dir": str(ctx.work / "cache")},
            "augment": {"crop_padding": 4, "flip": True}, "loader": loader}
    return data


def images_per_second(ctx: Context, loader: str, seconds: float) -> tuple[float, int]:
    cfg = parse_config({"name": "pipeline", "out_dir": str(ctx.work / "runs"),
                        "model": {"name": "resnet20", "width": ctx.sizes.train_width},
                        "data": data_section(ctx, loader), "method": {"name": "ann"},
                        "train": {"device": str(ctx.device), "progress": False}})
    train_set, test_set = build_datasets(cfg)
    trainer = Trainer(cfg, build_method(cfg, train_set), train_set, test_set, device=ctx.device)
    trainer.train_loader.set_epoch(0)
    seen = 0
    sync(ctx.device)
    start = time.perf_counter()
    for step, (x, y) in enumerate(trainer.train_loader):
        trainer.augment(x, torch.Generator().manual_seed(step))
        seen += len(y)
        if time.perf_counter() - start > seconds:
            break
    sync(ctx.device)
    return seen / (time.perf_counter() - start), seen


def run(ctx: Context, box: TimeBox, result: SectionResult) -> None:
    root = ctx.data.root()
    if ctx.data.unpack_seconds is not None:
        result.note(f"unpacking {ctx.data.source.name} took {ctx.data.unpack_seconds:.1f} s "
                    "(in the background, beside the sections before)")
    table = result.table(f"Input pipeline on {ctx.device} ({os.cpu_count()} CPU cores)",
                         ["what", "value"])
    start = time.perf_counter()
    cfg = parse_config({"data": data_section(ctx)})
    train_set, test_set = build_datasets(cfg)
    decode = time.perf_counter() - start
    table.add(f"decode and cache {root.name}: {len(train_set) + len(test_set):,} images, "
              f"{os.cpu_count()} processes", f"{decode:.1f} s")
    result.data["decode_s"] = decode
    for loader in LOADERS:
        if not box.fits(2.0, f"{loader} loader"):
            continue
        rate, seen = images_per_second(ctx, loader, box.left() / 2)
        table.add(f"{loader} loader + augmentation (crop 4, flip), batch {ctx.sizes.train_batch}, "
                  f"{seen:,} images", f"{rate:,.0f} img/s")
        result.data[f"{loader}_img_s"] = rate
