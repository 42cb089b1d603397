"""load_run, list_models and the Hub-style folder: a run's model back for inference."""

import pytest
import torch

import spikeguide
from conftest import state_equal, tiny_config
from spikeguide.config import parse_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    return spikeguide.train(parse_config(tiny_config(tmp, train={"epochs": 1}))).run_dir


def test_load_run_gives_the_trained_model_and_its_config(run_dir):
    from spikeguide.training.checkpoint import load_checkpoint

    model, cfg = spikeguide.load_run(run_dir)
    assert not model.training and model.spiking and cfg.model.T == 2
    assert state_equal(model.state_dict(), load_checkpoint(f"{run_dir}/best.pt")["model"])
    assert "resnet20" in spikeguide.list_models() and spikeguide.list_models() == \
        sorted(spikeguide.list_models())


def test_a_hub_folder_holds_the_same_model_and_a_model_card(run_dir, tmp_path, capsys):
    pytest.importorskip("safetensors")
    from spikeguide.cli import main
    from spikeguide.training.runlog import read_metrics

    out = tmp_path / "hub"
    assert main(["export", run_dir, "--format", "hub", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.toml",
                                                     "model.safetensors", "spikeguide.json"]
    model, cfg = spikeguide.load_run(out)
    trained, trained_cfg = spikeguide.load_run(run_dir)
    assert state_equal(model.state_dict(), trained.state_dict()) and cfg == trained_cfg
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), trained(x))
    card = (out / "README.md").read_text()
    last = read_metrics(run_dir)[-1]
    assert card.startswith("---\nlibrary_name: spikeguide\n")
    assert f"| {last.test.top1:.2f} % |" in card and f"{last.test.firing_rate:.4f}" in card
    assert 'name = "resnet20"' in card  # the recipe


def test_a_folder_that_is_not_a_hub_folder_is_named(tmp_path):
    from spikeguide.export.hub import load_hub_folder

    with pytest.raises(spikeguide.SpikeguideError, match="is not a spikeguide hub folder"):
        load_hub_folder(tmp_path)
