"""``spikeguide report RUN_DIR``: training curves as PNG files and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..errors import SpikeguideError  # noqa: E402
from ..training.runlog import EpochRecord, read_metrics  # noqa: E402


def plot_curves(records: list[EpochRecord], out_dir: Path) -> list[Path]:
    """loss.png, accuracy.png and (for an SNN) firing_rates.png, one point per epoch. Every
    curve has markers, so that a one-epoch run still shows its points; legends sit beside the
    axes, never on the data."""
    epochs = [r.epoch for r in records]
    paths = []
    split = "val" if records[-1].val is not None else "test"  # the split scored every epoch
    # a method's training loss is its objective (EnOF's: cross-entropy + lambda x LAF), the
    # scored split's loss is the cross-entropy alone: the same axis, labelled as different
    # quantities
    panels = [("loss.png", "loss", {"train: the method's objective": lambda r: r.train_loss,
                                    f"{split}: cross-entropy": lambda r: r.monitored.loss}),
              ("accuracy.png", "top-1 accuracy (%)",
               {"train top1": lambda r: r.train_top1, f"{split} top1": lambda r: r.monitored.top1})]
    for name, ylabel, curves in panels:
        fig, ax = plt.subplots(figsize=(7.5, 4))
        for label, value in curves.items():
            ax.plot(epochs, [value(r) for r in records], marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=ylabel)
        outside_legend(ax)
        ax.grid(alpha=0.3)
        paths.append(save(fig, out_dir / name))
    layers = list(records[-1].monitored.layer_rates)
    if layers:
        fig, ax = plt.subplots(figsize=(8.5, 4.5))
        stages = list(dict.fromkeys(stage_of(layer) for layer in layers))
        cmap = plt.get_cmap("tab10")
        markers = "os^vD<>ph*"
        for layer in layers:
            stage = stages.index(stage_of(layer))
            nth = [x for x in layers if stage_of(x) == stage_of(layer)].index(layer)
            ax.plot(epochs, [r.monitored.layer_rates.get(layer) for r in records], lw=1,
                    color=cmap(stage % 10), marker=markers[nth % len(markers)], markersize=4,
                    label=layer)
        ax.set(xlabel="epoch", ylabel=f"{split} firing rate (spikes per neuron per step)",
               title=f"{len(layers)} spiking layers; one colour per stage")
        outside_legend(ax, fontsize="x-small", ncol=1 + len(layers) // 20)
        ax.grid(alpha=0.3)
        paths.append(save(fig, out_dir / "firing_rates.png"))
    return paths


def stage_of(layer: str) -> str:
    """The group a layer's curve is coloured by: its name up to the stage index
    (``stages.1.0.act2`` -> ``stages.1``; ``stem.act1`` -> ``stem``)."""
    parts = layer.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def outside_legend(ax, **kwargs) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def save(fig, path: Path) -> Path:
    fig.tight_layout()  # makes room for a legend beside the axes
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
