"""Which loader a run uses: ``data.loader = "auto" | "memory" | "stream"``.

``auto`` keeps the splits in memory while, decoded, they fit within ``ram_share`` of the RAM
(counting every training process on the machine, each holding its own copy) and, when training
on a GPU, within ``gpu_share`` of its memory (the in-memory loader keeps them there); otherwise
it streams. Both loaders give the same batches, so the choice changes speed and memory, never
the result; only the random-resized-crop needs the streaming loader.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SpikeguideError
from ..machine import gpu_bytes, local_processes, ram_bytes
from .imagefiles import ImageFiles
from .registry import Dataset

LOADERS = ("auto", "memory", "stream")
RANDOM_CROP_NEEDS_STREAM = ("augment.random_resized_crop crops the source images, which the "
                            "in-memory loader does not keep: set data.loader = 'stream' or 'auto'")


@dataclass(frozen=True)
class LoaderChoice:
    kind: str  # "memory" or "stream"
    reason: str


def size_text(n: float) -> str:
    """Bytes in the largest unit that keeps them at least 1 (a CIFAR-10 split: "31 MB")."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{n:.0f} B"


def choose_loader(requested: str, datasets: list[Dataset], *, random_crop: bool,
                  device: torch.device, ram_share: float, gpu_share: float) -> LoaderChoice:
    """The loader for ``datasets`` (the splits of one run) and why; ``requested`` is one of
    ``LOADERS``."""
    name = datasets[0].info.get("dataset", "this dataset")
    if not all(isinstance(d, ImageFiles) for d in datasets):
        if requested == "stream":
            raise SpikeguideError(f"data.loader = 'stream': {name} has no streaming form (only "
                                  "image folders stream); set data.loader = 'auto' or 'memory'")
        return LoaderChoice("memory", f"{name} is read whole into memory (no streaming form)")
    if random_crop and requested == "memory":
        raise SpikeguideError(RANDOM_CROP_NEEDS_STREAM)
    if requested != "auto":
        return LoaderChoice(requested, f"data.loader = {requested!r}")
    if random_crop:
        return LoaderChoice("stream", "augment.random_resized_crop crops the source images, "
                                      "which only the streaming loader keeps")
    need = sum(d.decoded_nbytes() for d in datasets)
    processes = local_processes()
    ram = ram_bytes()
    held = f"the decoded splits take {size_text(need)}" + (
        f" in each of {processes} processes" if processes > 1 else "")
    if need * processes > ram_share * ram:
        return LoaderChoice("stream", f"{held}: more than data.ram_share = {ram_share:g} of the "
                                      f"{size_text(ram)} of RAM")
    gpu = gpu_bytes(device)
    if gpu is not None and need > gpu_share * gpu:
        return LoaderChoice("stream", f"{held}: more than data.gpu_share = {gpu_share:g} of the "
                                      f"{size_text(gpu)} of GPU memory")
    within = f"within data.ram_share = {ram_share:g} of the {size_text(ram)} of RAM"
    if gpu is not None:
        within += f" and data.gpu_share = {gpu_share:g} of the {size_text(gpu)} of GPU memory"
    return LoaderChoice("memory", f"{held}, {within}")
