"""Section 1: the machine and the versions of what runs on it."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from common import cpu_name, import_spikingjelly, spikingjelly_implementation

from .context import Context
from .results import SectionResult
from .timebox import TimeBox


def version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def command_output(*cmd: str, cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def gpu_rows(device: torch.device) -> list[tuple[str, str]]:
    p = torch.cuda.get_device_properties(device)
    driver = command_output("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    return [
        ("GPU", f"{p.name}, compute capability {p.major}.{p.minor}, {p.multi_processor_count} "
                f"multiprocessors, {p.total_memory / 2**30:.1f} GiB"),
        ("driver", driver or "unknown (nvidia-smi did not answer)"),
        ("CUDA (torch's runtime) / cuDNN",
         f"{torch.version.cuda} / {torch.backends.cudnn.version()}"),
        ("TF32", f"convolutions {torch.backends.cudnn.allow_tf32}, matrix products "
                 f"{torch.backends.cuda.matmul.allow_tf32} (torch's defaults, left as they are)"),
    ]


def spikingjelly_row(device: torch.device) -> str:
    sj = import_spikingjelly()
    if sj is None:
        return "not available (does not import)"
    row = (f"{version('spikingjelly')}; LIF on {device.type}: "
           f"{spikingjelly_implementation(sj, device)}")
    if device.type == "cuda":
        unavailable = sj.neuron_implementation("lif", device)["unavailable"]
        row += "".join(f"; {name} not available: {why}" for name, why in unavailable.items())
    return row


def run(ctx: Context, box: TimeBox, result: SectionResult) -> None:
    table = result.table("Machine and versions", ["what", "value"])
    rows = gpu_rows(ctx.device) if ctx.device.type == "cuda" else [("GPU", "none: CPU run")]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = command_output("git", "describe", "--always", "--dirty", cwd=ctx.script.parent)
    rows += [
        ("CPU", f"{cpu_name()}, {os.cpu_count()} cores, {memory:.0f} GiB"),
        ("Python / torch", f"{platform.python_version()} / {torch.__version__}"),
        ("Triton", version("triton") or "not installed"),
        ("SpikingJelly", spikingjelly_row(ctx.device)),
        ("spikeguide", commit or "unknown (no git metadata)"),
    ]
    for what, value in rows:
        table.add(what, value)
    result.data["machine"] = dict(rows)
