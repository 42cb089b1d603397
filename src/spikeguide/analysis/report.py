"""``spikeguide report RUN_DIR``: training curves as PNG files and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from ..errors import SpikeguideError  # noqa: E402
from ..training.runlog import EpochRecord, read_metrics  # noqa: E402


def plot_curves(records: list[EpochRecord], out_dir: Path) -> list[Path]:
    """loss.png, accuracy.png and (for an SNN) firing_rates.png, one point per epoch."""
    epochs = [r.epoch for r in records]
    paths = []
    split = "val" if records[-1].val is not None else "test"  # the split scored every epoch
    panels = [("loss.png", "loss", {"train loss": lambda r: r.train_loss,
                                    f"{split} loss": lambda r: r.monitored.loss}),
              ("accuracy.png", "top-1 accuracy (%)",
               {"train top1": lambda r: r.train_top1, f"{split} top1": lambda r: r.monitored.top1})]
    for name, ylabel, curves in panels:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, value in curves.items():
            ax.plot(epochs, [value(r) for r in records], marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
        paths.append(save(fig, out_dir / name))
    layers = list(records[-1].monitored.layer_rates)
    if layers:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        cmap = plt.get_cmap("viridis")
        for i, layer in enumerate(layers):
            ax.plot(epochs, [r.monitored.layer_rates.get(layer) for r in records],
                    color=cmap(i / max(1, len(layers) - 1)), lw=1)
        ax.set(xlabel="epoch", ylabel=f"{split} firing rate (spikes per neuron per step)",
               title=f"{len(layers)} spiking layers, first (dark) to last (light)")
        ax.grid(alpha=0.3)
        paths.append(save(fig, out_dir / "firing_rates.png"))
    return paths


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summarize(records: list[EpochRecord]) -> dict[str, Any]:
    """One table row: final test top-1, best top-1 (validation's where the run holds a split
    out), final firing rate, training time."""
    best = max(records, key=lambda r: r.monitored.top1)
    last = records[-1]
    rate = last.monitored.firing_rate
    return {"epochs": last.epoch, "final top1 %": "-" if last.test is None else last.test.top1,
            "best top1 %": best.monitored.top1,
            "best epoch": best.epoch, "final firing rate": "-" if rate is None else rate,
            "train minutes": last.elapsed_s / 60}


def report(run_dir: str | Path) -> tuple[dict[str, Any], list[Path]]:
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        raise SpikeguideError(f"{str(run_dir)!r} has no metrics.jsonl with a finished epoch; "
                              "is it a spikeguide run directory?")
    return summarize(records), plot_curves(records, run_dir)
