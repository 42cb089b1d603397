import json
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_config, write_recipe
from spikeguide.analysis.diagnose import (
    FlowReport,
    LayerFlow,
    gradient_flow,
    parse_sweep,
    recommend,
    sweep_widths,
)
from spikeguide.cli import main
from spikeguide.config import load_config
from spikeguide.errors import SpikeguideError
from spikeguide.models import create_model
from spikeguide.neurons import is_spiking

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def deep_narrow_snn(surrogate: str, seed: int = 0):
    """ResNet-50 at 1/16 width (49 spiking layers, 4 to 128 channels), T=2, on 8x8 noise."""
    torch.manual_seed(seed)
    model = create_model("resnet50", width=0.0625, T=2, stem="cifar", surrogate=surrogate)
    return model, [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,)))]


# Surrogates here integrate to 1, so a narrow one has a tall peak (1/width): measured, the gradient
# EXPLODES on its way back through depth for narrow widths and VANISHES for wide ones (the
# opposite of surrogates with a fixed peak height). docs/deep-training.md shows the same on data.
@pytest.mark.parametrize("surrogate, narrow, between, tuned, wide", [
    ("atan", 0.05, 0.2, 0.5, 2.0),
    ("rectangle", 0.1, 1.0, 2.0, 8.0),
])
def test_width_sweep_flags_narrow_and_wide_and_recommends_a_tuned_width(
        surrogate, narrow, between, tuned, wide):
    model, batches = deep_narrow_snn(surrogate)
    reports = sweep_widths(model, batches, [narrow, between, tuned, wide], steps=3,
                           make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.05,
                                                                     momentum=0.9))
    by_width = {r.width: r for r in reports}
    n_layers = len([m for m in model.modules() if is_spiking(m)])
    assert all(len(r.layers) == n_layers == 49 for r in reports)

    too_narrow, ok, too_wide = by_width[narrow], by_width[tuned], by_width[wide]
    assert too_narrow.first_to_last > 1e3 and too_narrow.trend == "exploding"
    assert too_wide.first_to_last < 1e-3 and too_wide.trend == "vanishing"
    assert len(too_narrow.flagged) > n_layers / 2 and len(too_wide.flagged) > n_layers / 2
    assert ok.trend == "stable" and ok.flagged == []
    assert 0.1 < ok.first_to_last < 10

    best = recommend(reports)
    assert narrow < best.width < wide
    assert best is ok and ok.loss_fell

    # the forward pass does not depend on the surrogate: same firing rates, same loss
    for r in reports:
        assert r.loss_start == ok.loss_start
        assert [f.firing_rate for f in r.layers] == [f.firing_rate for f in ok.layers]
    assert all(0 < f.firing_rate < 1 for f in ok.layers)


def test_gradient_norms_are_those_of_the_neuron_input_currents():
    model, batches = deep_narrow_snn("atan")
    layers, loss = gradient_flow(model, batches)

    currents = []
    handles = [m.register_forward_pre_hook(lambda m, inp: currents.append(inp[0]))
               for m in model.modules() if is_spiking(m)]
    x, y = batches[0]
    model.train()
    expected_loss = torch.nn.functional.cross_entropy(model(x), y)
    for h in handles:
        h.remove()
    grads = torch.autograd.grad(expected_loss, currents)
    assert loss == pytest.approx(expected_loss.item())
    expected = [float(g.norm()) for g in grads]
    assert [f.grad_norm for f in layers] == pytest.approx(expected, rel=1e-5)
    assert layers[0].relative == 1.0
    assert all(p.grad is None for p in model.parameters())


def flow(ratio: float, loss_end: float) -> FlowReport:
    layers = [LayerFlow("a", ratio, 0.1, 1.0), LayerFlow("b", 1.0, 0.1, 1 / ratio)]
    return FlowReport("atan", ratio, layers, loss_start=2.0, loss_end=loss_end)


def test_recommendation_needs_a_falling_loss():
    balanced_but_stuck, off_but_learning = flow(1.0, 2.5), flow(30.0, 1.5)
    assert recommend([balanced_but_stuck, off_but_learning]) is off_but_learning
    assert recommend([balanced_but_stuck, flow(2.0, math.nan)]) is None
    assert flow(30.0, 1.0).trend == "exploding" and flow(30.0, 1.0).flagged == ["b"]


def test_parse_sweep():
    assert parse_sweep("surrogate.width=0.1,0.5,2") == [0.1, 0.5, 2.0]
    assert parse_sweep("surrogate.steepness=10, 2") == [0.1, 0.5]
    for bad in ["surrogate.width", "model.T=2,4", "surrogate.width=0.1,x", "surrogate.width=0,1"]:
        with pytest.raises(SpikeguideError):
            parse_sweep(bad)


def diagnose_recipe(tmp_path, **sections):
    cfg = tiny_config(tmp_path, model={"name": "resnet50", "width": 0.0625, "T": 2,
                                       "options": {"stem": "cifar"}},
                      data={"batch_size": 16}, **sections)
    return write_recipe(tmp_path / "r.toml", cfg)


def test_cli_diagnose_sweep_prints_layers_summary_and_recommendation(tmp_path, capsys):
    recipe = diagnose_recipe(tmp_path)
    out_dir = tmp_path / "diag"
    code = main(["diagnose", str(recipe), "--sweep", "surrogate.width=0.05,0.5,2", "--batches", "1",
                 "--steps", "3", "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0
    assert "stages.3.2.act" in out and "w=0.05" in out and "w=2" in out
    assert "exploding" in out and "vanishing" in out and "stable" in out
    assert "recommended: surrogate.width=0.5 " in out
    assert (out_dir / "gradient_flow.png").stat().st_size > 0
    data = json.loads((out_dir / "diagnose.json").read_text())
    assert data["recommended_width"] == 0.5 and len(data["reports"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--sweep", "surrogate.width=a,b"], "numbers"),
    (["--set", 'method.name="ann"'], "no spiking neurons"),
])
def test_cli_diagnose_errors_are_one_line(tmp_path, capsys, args, message):
    code = main(["diagnose", str(diagnose_recipe(tmp_path)), "--steps", "0", "--out",
                 str(tmp_path / "d"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("resnet50_*.toml"))
                         + sorted(RECIPES.glob("cpu/resnet50_*.toml")), ids=lambda p: p.name)
def test_resnet50_recipes_parse_with_bn_currents_and_tuned_surrogate(recipe):
    cfg = load_config(recipe)
    assert cfg.model.name == "resnet50" and cfg.model.T <= 10
    assert cfg.surrogate.width is not None  # tuned, not left at the default
