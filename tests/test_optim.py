"""Optimizer parameter groups: weight decay on every parameter or on conv/linear weights only."""

import pytest
import torch

from spikeguide.config import OptimConfig, parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.models import create_model
from spikeguide.training.optim import build_optimizer


def model():
    torch.manual_seed(0)
    return create_model("resnet19", T=2, width=0.125, neuron="plif")


def test_all_is_one_group_of_every_trainable_parameter_in_order():
    m = model()
    opt = build_optimizer(OptimConfig(weight_decay=1e-3), m)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-3
    assert opt.param_groups[0]["params"] == list(m.parameters())


def test_weights_decays_conv_and_linear_weights_only():
    m = model()
    cfg = OptimConfig(lr=0.1, momentum=0.9, weight_decay=0.01, weight_decay_on="weights")
    opt = build_optimizer(cfg, m)
    names = {id(p): n for n, p in m.named_parameters()}
    def group(decay):
        return sorted(names[id(p)] for g in opt.param_groups if bool(g["weight_decay"]) == decay
                      for p in g["params"])

    decayed, kept = group(True), group(False)
    assert decayed == sorted(n for n, _ in m.named_parameters()
                             if n.endswith(("conv.weight", "conv1.weight", "conv2.weight",
                                            "fc.weight")) or n == "classifier.weight")
    assert "classifier.bias" in kept and "encoder.bn.weight" in kept and "pool.fc.bias" in kept
    assert any(n.endswith("decay_logit") for n in kept)  # PLIF decays are neuron parameters
    assert len(decayed) + len(kept) == len(list(m.parameters()))
    # one step on zero gradients: SGD moves a decayed weight by -lr * wd * w, nothing else
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(m.named_parameters())
    torch.testing.assert_close(after["classifier.weight"],
                               before["classifier.weight"] * (1 - 0.1 * 0.01))
    assert torch.equal(after["encoder.bn.weight"], before["encoder.bn.weight"])
    assert torch.equal(after["classifier.bias"], before["classifier.bias"])


def test_a_bad_choice_names_the_key():
    with pytest.raises(SpikeguideError, match="optim.weight_decay_on must be one of"):
        parse_config({"optim": {"weight_decay_on": "bn"}})
