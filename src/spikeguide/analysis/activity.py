"""Firing rates, synaptic operations and an energy estimate of an SNN beside its ANN twin.

Counting rules (per image, summed over all time steps that actually ran):

* A synaptic layer (``Conv2d``, ``Linear``) fed by spikes does one accumulate (AC) per spike per
  target it reaches: a spike into a convolution costs as many ACs as the output positions and
  channels its kernel window reaches. Spikes that were pooled or flattened still count as spikes:
  average pooling folds into the next layer's weights, and the max of spikes is a spike.
* A layer fed by real values (the image into the first layer, RepAct's ReLU output) does one
  multiply-accumulate (MAC) per weight application, dense. A static image is encoded once, so the
  first layer's MACs are counted once, not T times.
* Attention's products (:mod:`spikeguide.models.attention`): ``a @ b`` costs one accumulate per
  pair of nonzero ``a[n, k]`` and ``b[k, m]`` when either side is spikes (one operand selects what
  the other adds), else dense MACs; a sum over an axis one accumulate per nonzero entry; a mask
  ``a * b`` nothing (a select), and its output is spikes when both sides are. The ANN twin's
  products are dense MACs (a sum: one per entry). The sum of two spike tensors on a residual
  stream is not binary: layers fed by it are counted as fed by real values.
* The ANN twin runs every layer once per image, dense: its MACs are those of one step's input.
* Energy uses the 45 nm CMOS figures of Horowitz (ISSCC 2014) common in the SNN literature:
  ``E_AC`` = 0.9 pJ and ``E_MAC`` = 4.6 pJ (32-bit float). Positions that fall on zero padding are
  not counted on either side, so one step of a layer whose inputs all fire costs exactly its ANN
  twin's count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SpikeguideError
from ..models.attention import SpikeMask, SpikeMatmul, SpikeSum
from ..models.base import in_mode
from ..neurons import is_spiking
from ..training.scoring import count_spikes

E_AC = 0.9  # pJ per accumulate
E_MAC = 4.6  # pJ per multiply-accumulate

SYNAPTIC = (nn.Conv2d, nn.Linear)
# Modules whose output still counts as spikes when their input does.
SPIKE_PRESERVING = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d,
                    nn.Flatten, nn.Identity, nn.Dropout)


@dataclass
class NeuronRow:
    name: str
    neurons: int  # per image and time step
    firing_rate: float  # spikes per neuron per time step


@dataclass
class LayerRow:
    name: str
    kind: str
    input: str  # "spikes" or "real"
    acs: float  # per image
    macs: float  # per image
    ann_macs: float  # per image, the ANN twin

    @property
    def energy_pj(self) -> float:
        return self.acs * E_AC + self.macs * E_MAC

    @property
    def ann_energy_pj(self) -> float:
        return self.ann_macs * E_MAC


@dataclass
class ActivityReport:
    """Per-layer activity of a model over some inputs, with totals per image."""

    images: int
    neurons: list[NeuronRow] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)

    @property
    def firing_rate(self) -> float:
        """Mean over all neurons and steps (layers weighted by their neuron count)."""
        n = sum(r.neurons for r in self.neurons)
        return sum(r.neurons * r.firing_rate for r in self.neurons) / n if n else 0.0

    @property
    def acs(self) -> float:
        return sum(r.acs for r in self.layers)

    @property
    def macs(self) -> float:
        return sum(r.macs for r in self.layers)

    @property
    def ann_macs(self) -> float:
        return sum(r.ann_macs for r in self.layers)

    @property
    def energy_pj(self) -> float:
        return sum(r.energy_pj for r in self.layers)

    @property
    def ann_energy_pj(self) -> float:
        return sum(r.ann_energy_pj for r in self.layers)

    def to_dict(self) -> dict:
        totals = {k: getattr(self, k) for k in
                  ("firing_rate", "acs", "macs", "ann_macs", "energy_pj", "ann_energy_pj")}
        layers = [{**asdict(r), "energy_pj": r.energy_pj, "ann_energy_pj": r.ann_energy_pj}
                  for r in self.layers]
        return {"images": self.images, "neurons": [asdict(r) for r in self.neurons],
                "layers": layers, "totals": totals}

    def table(self) -> str:
        """Markdown tables: firing rate per neuron layer, then operations and energy per layer."""
        out = ["| neuron layer | neurons | firing rate |", "|---|---:|---:|"]
        out += [f"| {r.name} | {r.neurons} | {r.firing_rate:.4f} |" for r in self.neurons]
        out += ["", "| layer | input | ACs | MACs | energy (uJ) | ANN MACs | ANN energy (uJ) |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for r in [*self.layers, self]:
            name, kind = (r.name, r.input) if isinstance(r, LayerRow) else ("**total**", "")
            out.append(f"| {name} | {kind} | {r.acs:.4g} | {r.macs:.4g} | {r.energy_pj / 1e6:.4g} | "
                       f"{r.ann_macs:.4g} | {r.ann_energy_pj / 1e6:.4g} |")
        ratio = self.ann_energy_pj / self.energy_pj if self.energy_pj else math.inf
        out.append(f"\nper image; mean firing rate {self.firing_rate:.4f}; the SNN uses "
                   f"{ratio:.2f}x less energy than its ANN twin (E_AC {E_AC} pJ, E_MAC {E_MAC} pJ)")
        return "\n".join(out)


def _window_counts(layer: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """Weight applications of ``layer`` driven by the nonzero entries of ``mask`` (0/1)."""
    if isinstance(layer, nn.Linear):
        return mask.sum() * layer.out_features
    if not isinstance(layer.padding, str) and layer.padding_mode != "zeros":
        raise SpikeguideError(f"cannot count operations of a {layer.padding_mode}-padded conv")
    g = layer.groups
    ones = mask.new_ones(g, layer.in_channels // g, *layer.kernel_size)
    reached = F.conv2d(mask, ones, None, layer.stride, layer.padding, layer.dilation, g)
    return reached.sum() * (layer.out_channels // g)


def _product_count(module: nn.Module, masks: list[torch.Tensor]) -> float:
    """Operations of a product module whose operands' nonzero entries are ``masks`` (0/1),
    per the module docstring: pairs of nonzero entries that meet in ``a @ b``, entries summed."""
    if isinstance(module, SpikeMatmul):
        return (masks[0] @ masks[1]).sum().item()
    return masks[0].sum().item()


@dataclass
class _Tally:
    kind: str
    spikes: bool = True  # stays True only while every call was fed by spikes
    acs: float = 0.0
    macs: float = 0.0
    ann_macs: float = 0.0  # per image: one dense step


class _Recorder:
    """Forward hooks that count spikes and operations while the model runs."""

    def __init__(self, model: nn.Module):
        self.spiking_storages: set[int] = set()
        self.keep: list[torch.Tensor] = []  # keeps marked storages alive, so no address is reused
        self.ops: dict[str, _Tally] = {}
        self.handles = []
        for name, m in model.named_modules():
            if is_spiking(m):
                self.handles.append(m.register_forward_hook(self._neuron))
            elif isinstance(m, SYNAPTIC):
                self.handles.append(m.register_forward_hook(self._synapse(name)))
            elif isinstance(m, SPIKE_PRESERVING):
                self.handles.append(m.register_forward_hook(self._passthrough))
            elif isinstance(m, (SpikeMatmul, SpikeSum)):
                self.handles.append(m.register_forward_hook(self._product(name)))
            elif isinstance(m, SpikeMask):
                self.handles.append(m.register_forward_hook(self._mask))

    def end_batch(self) -> None:
        self.spiking_storages.clear()
        self.keep.clear()

    def _mark(self, t: torch.Tensor) -> None:
        self.spiking_storages.add(t.untyped_storage().data_ptr())
        self.keep.append(t)

    def _is_spikes(self, t: torch.Tensor) -> bool:
        return t.untyped_storage().data_ptr() in self.spiking_storages

    def _neuron(self, module, inputs, out):
        self._mark(out)

    def _passthrough(self, module, inputs, out):
        if self._is_spikes(inputs[0]):
            self._mark(out)

    def _synapse(self, name):
        def hook(module, inputs, out):
            x = inputs[0]
            tally = self.ops.setdefault(name, _Tally(type(module).__name__))
            if self._is_spikes(x):
                tally.acs += _window_counts(module, (x != 0).to(x.dtype)).item()
            else:
                tally.spikes = False
                tally.macs += _window_counts(module, torch.ones_like(x)).item()
            tally.ann_macs = _window_counts(module, torch.ones_like(x[:1])).item()
        return hook

    def _mask(self, module, inputs, out):
        if all(self._is_spikes(x) for x in inputs):
            self._mark(out)

    def _product(self, name):
        def hook(module, inputs, out):
            spikes = [self._is_spikes(x) for x in inputs]
            masks = [(x != 0).to(x.dtype) if s else torch.ones_like(x)
                     for x, s in zip(inputs, spikes)]
            tally = self.ops.setdefault(name, _Tally(type(module).__name__))
            count = _product_count(module, masks)
            if any(spikes):
                tally.acs += count
            else:
                tally.spikes = False
                tally.macs += count
            tally.ann_macs = _product_count(module, [torch.ones_like(x[:1, :1]) for x in inputs])
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def activity_report(model: nn.Module, batches: Iterable, max_batches: int | None = None) -> ActivityReport:
    """Run ``model`` (in eval mode) on ``batches`` and count spikes and operations.

    ``batches`` yields input tensors ``[B, ...]`` or tuples whose first item is one (a data
    loader's ``(x, y)``). Counts are per image over all time steps; see the module docstring.
    """
    rec = _Recorder(model)
    images = 0
    try:
        with in_mode(model, training=False), count_spikes(model) as spikes:
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x)
                rec.end_batch()
                images += x.shape[0]
    finally:
        rec.close()
    if images == 0:
        raise SpikeguideError("activity_report needs at least one non-empty batch")
    report = ActivityReport(images)
    for name, layer in spikes.items():
        report.neurons.append(NeuronRow(name, layer.neurons, layer.rate))
    for name, t in rec.ops.items():
        report.layers.append(LayerRow(name, t.kind, "spikes" if t.spikes else "real",
                                      t.acs / images, t.macs / images, t.ann_macs))
    return report


def plot_firing_rates(report: ActivityReport, path) -> None:
    """A bar chart of the firing rate of every neuron layer, saved to ``path`` (PNG, PDF, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = [r.name for r in report.neurons]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(names) + 1.5), 3.5))
    ax.bar(range(len(names)), [r.firing_rate for r in report.neurons], color="tab:blue")
    ax.axhline(report.firing_rate, color="tab:red", linestyle="--", linewidth=1,
               label=f"mean {report.firing_rate:.3f}")
    ax.set_xticks(range(len(names)), names, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("spikes / neuron / step")
    ax.set_title("firing rate per layer", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
