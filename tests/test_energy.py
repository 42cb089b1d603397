"""Firing rates, synaptic operations and energy against counts done by hand."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from spikeguide.analysis.activity import E_AC, E_MAC, activity_report, plot_firing_rates
from spikeguide.models import SpikingNet, create_model
from spikeguide.models.layers import TimeSequential
from spikeguide.neurons import LIF


def two_layer_net() -> SpikingNet:
    """image 1x2x2 -> conv 1x1 (1 -> 2 channels, weights 1 and 0.5) -> LIF -> linear 8 -> 3, T = 2."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    conv.weight.data = torch.tensor([1.0, 0.5]).view(2, 1, 1, 1)
    fc = nn.Linear(8, 3)
    stem = TimeSequential(OrderedDict(act=LIF(decay=0.5, threshold=1.0, reset="hard")))
    return SpikingNet(nn.Sequential(conv), stem, nn.ModuleList(), nn.Flatten(), fc, T=2, spiking=True)


def test_two_layer_network_hand_count():
    net = two_layer_net()
    image = torch.tensor([[1.0, 2.0], [0.6, 0.0]]).view(1, 1, 2, 2)
    # Channel 0 gets currents 1, 2, 0.6, 0: the first two fire at both steps (hard reset to 0,
    # then charge again), 0.6 reaches 0.3 + 0.6 = 0.9 < 1. Channel 1 gets 0.5, 1, 0.3, 0: only
    # the 1 fires, twice. 6 spikes of 8 neurons x 2 steps; a black image fires nothing.
    report = activity_report(net, [image, torch.zeros_like(image)])
    assert report.images == 2
    [neurons] = report.neurons
    assert (neurons.name, neurons.neurons) == ("stem.act", 8)
    assert neurons.firing_rate == pytest.approx(6 / 32)
    conv, fc = report.layers
    # The static image is encoded once: 2 outputs x 2x2 positions x fan-in 1 = 8 MACs per image.
    assert (conv.name, conv.input, conv.macs, conv.acs, conv.ann_macs) == ("encoder.0", "real", 8, 0, 8)
    # Every spike reaches the 3 outputs: 6 x 3 = 18 ACs for the first image, 0 for the second.
    assert (fc.name, fc.input, fc.acs, fc.macs, fc.ann_macs) == ("classifier", "spikes", 9, 0, 24)
    assert report.energy_pj == pytest.approx(8 * E_MAC + 9 * E_AC) == pytest.approx(44.9)
    assert report.ann_energy_pj == pytest.approx((8 + 24) * E_MAC) == pytest.approx(147.2)
    assert "classifier" in report.table()
    assert report.to_dict()["totals"]["acs"] == 9


def test_spike_into_padded_conv_costs_its_fan_out():
    """A spike's fan-out in a 3x3, padding-1 conv: the output positions whose window covers it."""
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    net = SpikingNet(nn.Sequential(nn.Identity()), TimeSequential(OrderedDict(act=LIF(threshold=0.5))),
                     nn.ModuleList([TimeSequential(OrderedDict(conv=conv))]), nn.Flatten(), nn.Linear(4 * 9, 2),
                     T=1, spiking=True)
    image = torch.zeros(1, 1, 3, 3)
    image[0, 0, 0, 0] = 1  # corner: reaches 2x2 output positions
    image[0, 0, 1, 1] = 1  # centre: reaches all 3x3
    image[0, 0, 0, 1] = 1  # edge: reaches 2x3
    row = {r.name: r for r in activity_report(net, [image]).layers}["stages.0.conv"]
    assert row.input == "spikes"
    assert row.acs == (4 + 9 + 6) * 4
    assert row.ann_macs == sum(a * b for a in (2, 3, 2) for b in (2, 3, 2)) * 4  # padding not counted


@pytest.mark.parametrize("repact", [False, True])
def test_repact_relu_feeds_multiply_accumulates(repact):
    net = create_model("resnet20", width=1 / 16, T=2, repact=repact)
    report = activity_report(net, [(torch.randn(2, 3, 32, 32), torch.zeros(2))])
    rows = {r.name: r for r in report.layers}
    assert rows["encoder.conv"].input == "real"
    assert rows["stages.0.0.residual.conv1"].input == "spikes"  # after the stem's average pool
    assert rows["classifier"].input == ("real" if repact else "spikes")
    assert len(report.neurons) == len(net.neurons())
    assert 0 < report.firing_rate < 1
    assert report.ann_macs > 0 and report.energy_pj < report.ann_energy_pj
    assert net.training  # the mode is restored


def test_plot_firing_rates(tmp_path):
    pytest.importorskip("matplotlib")
    report = activity_report(two_layer_net(), [torch.ones(1, 1, 2, 2)])
    plot_firing_rates(report, tmp_path / "rates.png")
    assert (tmp_path / "rates.png").read_bytes()[:4] == b"\x89PNG"
