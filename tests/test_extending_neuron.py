"""docs/extending.md, 'A neuron': a neuron written and registered outside the package, trained
through the public API with bptt and ratebp, and refused by NIR export."""

import pytest
import torch

import spikeguide
from conftest import tiny_config
from spikeguide import SpikeguideError
from spikeguide.config import parse_config
from spikeguide.models import create_model
from spikeguide.neurons import SpikingNeuron, get_surrogate, register_neuron
from spikeguide.ratepass import RateRecorder, record_neuron
from spikeguide.training.build import load_model
from spikeguide.training.checkpoint import load_checkpoint


@register_neuron("partial_reset")
class PartialReset(SpikingNeuron):
    """A leaky neuron whose reset takes back only part of the threshold:
    ``u_t = decay * u_{t-1} + I_t``, ``u_t^+ = u_t - fraction * threshold * s_t``."""

    def __init__(self, decay=0.5, fraction=0.5, threshold=1.0, surrogate="atan", width=None,
                 backend="auto"):
        if not 0 < fraction <= 1:
            raise SpikeguideError(f"neuron fraction must be in (0, 1], got {fraction}")
        super().__init__(threshold, surrogate, width, backend)
        self.decay, self.fraction = decay, fraction

    def charge(self, u, current):
        return self.decay * u + current

    def reset_membrane(self, u, s):
        return u - self.fraction * self.threshold * s

    # what rate-based backpropagation needs: du_t/du_{t-1}^+, du_t/dI_t and a_t = du_t^+/du_t
    def charge_gains(self, u, current):
        return self.decay, 1.0

    def reset_gain(self, u, s, g):
        return 1 - self.fraction * self.threshold * g


def recipe(tmp_path, method, **neuron):
    return tiny_config(tmp_path, name=method, method={"name": method},
                       neuron={"kind": "partial_reset", "options": {"fraction": 0.25}, **neuron})


def test_ratebp_uses_the_neurons_own_reset_gain():
    """The eligibility the rate pass backpropagates equals autograd's d mean_t s_t / d delta
    through the unrolled dynamics, for an input shift delta that is the same at every step."""
    torch.manual_seed(0)
    neuron = PartialReset(decay=0.8, fraction=0.5, surrogate=get_surrogate("atan", 1.0))
    current = torch.randn(6, 50, dtype=torch.double) + 0.8
    shift = torch.zeros(50, dtype=torch.double, requires_grad=True)
    neuron(current + shift).mean(0).sum().backward()  # the reference loop, with autograd

    recorder = RateRecorder(neuron)  # the two passes of ratebp on this one layer
    with torch.no_grad(), recorder.recording(6):
        spikes = neuron(current)
    mean_current = current.mean(0, keepdim=True).requires_grad_()
    with recorder.replaying():
        rate = neuron(mean_current)
    rate.sum().backward()

    assert torch.equal(spikes, neuron(current))
    assert 0 < spikes.mean() < 1
    torch.testing.assert_close(rate[0], spikes.mean(0))
    torch.testing.assert_close(mean_current.grad[0], shift.grad)
    # LIF's soft reset (the whole threshold) gives another eligibility: the test sees the gain
    _, _, lif = record_neuron(current, 0.8, 1.0, "soft", False, neuron.surrogate)
    assert (lif - shift.grad).abs().max() > 1e-2


@pytest.mark.parametrize("method", ["bptt", "ratebp"])
def test_two_training_steps_from_a_recipe(tmp_path, method, monkeypatch):
    from spikeguide.neurons import base
    from spikeguide.ratepass import recorder

    calls = {"reference": 0, "fused": 0, "recorded": 0}

    def counted(key, fn):
        def wrapper(*args, **kwargs):
            calls[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(base, "reference_loop", counted("reference", base.reference_loop))
    monkeypatch.setattr(base, "fused_forward", counted("fused", base.fused_forward))
    monkeypatch.setattr(recorder, "record_dynamics", counted("recorded", recorder.record_dynamics))

    cfg = parse_config(recipe(tmp_path, method))
    spikeguide.train(cfg, max_steps=2)

    assert load_checkpoint(cfg.run_dir / "latest.pt")["step"] == 2
    assert calls["fused"] == 0  # no kernel runs these dynamics
    assert calls["recorded" if method == "ratebp" else "reference"] > 0
    model, saved, _ = load_model(str(cfg.run_dir), prefer="latest")  # options saved with the run
    assert saved.neuron.options == {"fraction": 0.25} and saved.neuron.reset is None
    assert model.neurons() and all(type(m) is PartialReset and m.fraction == 0.25
                                   for _, m in model.neurons())


@pytest.mark.parametrize("neuron,match", [
    ({"options": {"fraction": 0.25, "leak": 1}}, "neuron 'partial_reset' has no option\\(s\\) "
     "\\['leak'\\]; its options: decay, fraction, threshold, backend"),
    ({"reset": "soft"}, "neuron 'partial_reset' has no option\\(s\\) \\['reset'\\]"),
    ({"options": {"fraction": 2.0}}, "fraction must be in \\(0, 1\\], got 2.0"),
    ({"backend": "compiled"}, "no fused kernel runs the neuron PartialReset \\(PartialReset "
     "defines no kernel_spec\\): use backend 'auto' or 'torch'"),
])
def test_recipe_mistakes_are_one_line_errors_when_the_config_is_read(tmp_path, neuron, match):
    with pytest.raises(SpikeguideError, match=match):
        parse_config(recipe(tmp_path, "bptt", **neuron))


def test_nir_export_refuses_it():
    pytest.importorskip("nir")
    from spikeguide.export.nir import to_nir

    model = create_model("resnet20", width=1 / 16, T=2, neuron="partial_reset")
    with pytest.raises(SpikeguideError, match="the neuron PartialReset has no NIR node "
                       "\\(PartialReset defines no nir_node\\)"):
        to_nir(model)
