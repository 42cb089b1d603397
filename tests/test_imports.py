"""``--import MODULE``: runs of methods and neurons registered outside the package, from the
command line; eval and export need the neuron, not the training method."""

from conftest import tiny_config, write_recipe
from spikeguide.methods import METHODS
from spikeguide.neurons import NEURONS

NEURON = """
from spikeguide.neurons import LIF, register_neuron


@register_neuron("outside_lif")
class OutsideLIF(LIF):
    pass
"""

METHOD = """
import torch.nn.functional as F

import outside_neuron  # noqa: F401
from spikeguide.methods import Method, StepResult, register_method


@register_method("outside_ce")
class OutsideCE(Method):
    def training_step(self, x, y):
        logits = self.student(x)
        return StepResult(F.cross_entropy(logits, y), logits)
"""


def test_import_trains_evaluates_and_exports_a_run_of_outside_registrations(tmp_path, capsys,
                                                                            monkeypatch):
    import sys

    from spikeguide.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # --import adds the working directory
    (tmp_path / "outside_neuron.py").write_text(NEURON)
    (tmp_path / "outside_method.py").write_text(METHOD)
    recipe = str(write_recipe(tmp_path / "r.toml", tiny_config(
        tmp_path, train={"epochs": 1}, method={"name": "outside_ce"},
        neuron={"kind": "outside_lif"})))
    assert main(["train", recipe]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'outside_ce'" in err and "pass --import MODULE" in err
    assert main(["eval", recipe, "--import", "no_such_module"]) == 2
    assert capsys.readouterr().err.startswith(
        "spikeguide: error: --import no_such_module: No module named")
    assert main(["train", recipe, "--import", "outside_method"]) == 0
    # as in a fresh process, where nothing is registered yet
    for registry, name in [(METHODS, "outside_ce"), (NEURONS, "outside_lif")]:
        monkeypatch.delitem(registry._entries, name)
    for module in ("outside_method", "outside_neuron"):
        monkeypatch.delitem(sys.modules, module)
    run_dir = str(tmp_path / "runs" / "tiny")
    assert main(["eval", run_dir]) == 2
    assert "unknown neuron 'outside_lif'" in capsys.readouterr().err
    # the neuron alone: evaluating a run does not need the method that trained it
    assert main(["eval", run_dir, "--import", "outside_neuron"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[:3] == ["resnet20", "True", "2"]
    assert "outside_ce" not in METHODS
    assert main(["export", run_dir, "--out", str(tmp_path / "m.nir"), "--import",
                 "outside_neuron"]) == 0
    assert (tmp_path / "m.nir").is_file()
