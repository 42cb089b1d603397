"""docs/extending.md, proven: a training method and a model architecture registered from outside
the package (this file), trained through the public API."""

from collections import OrderedDict
from dataclasses import dataclass

import pytest
from torch import nn
from torch.nn import functional as F

from conftest import tiny_config
from spikeguide import SpikeguideError, train
from spikeguide.config import parse_config
from spikeguide.methods import Method, OptionGroup, StepResult, register_method
from spikeguide.models import SpikingNet, register_model
from spikeguide.models.layers import TimeSequential
from spikeguide.training.checkpoint import load_checkpoint

# ---- A training method: a multi-class hinge loss on the student's time-averaged logits ----

@dataclass
class HingeOptions(OptionGroup):
    margin: float = 1.0

    def check(self) -> None:
        if not self.margin > 0:
            raise SpikeguideError(f"method.margin must be positive, got {self.margin}")


@register_method("toy_hinge")
class ToyHinge(Method):
    Options = HingeOptions

    def training_step(self, x, y) -> StepResult:
        logits = self.student(x)
        return StepResult(F.multi_margin_loss(logits, y, margin=self.options.margin), logits)


# ---- A model architecture: two conv stages, declared for the hybrid method ----

def conv_bn(cin: int, cout: int) -> list[tuple[str, nn.Module]]:
    return [("conv", nn.Conv2d(cin, cout, 3, padding=1, bias=False)), ("bn", nn.BatchNorm2d(cout))]


@register_model("toy_net")
def toy_net(*, num_classes: int, in_channels: int, make_act, width: float, T: int,
            spiking: bool, channels: int = 8) -> SpikingNet:
    c = max(1, round(channels * width))
    encoder = nn.Sequential(OrderedDict(conv_bn(in_channels, c)))
    stem = TimeSequential(OrderedDict(act=make_act()))
    stages = nn.ModuleList([
        TimeSequential(OrderedDict(conv_bn(c, c) + [("act", make_act()),
                                                     ("pool", nn.AvgPool2d(2))])),
        TimeSequential(OrderedDict(conv_bn(c, 2 * c) + [("act", make_act())])),
    ])
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return SpikingNet(encoder, stem, stages, pool, nn.Linear(2 * c, num_classes), T, spiking,
                      stage_channels=[c, 2 * c])


def two_steps(tmp_path, name, **sections):
    cfg = parse_config(tiny_config(tmp_path, name=name, train={"epochs": 1}, **sections))
    train(cfg, max_steps=2)
    return cfg, load_checkpoint(cfg.run_dir / "latest.pt")


def test_a_method_registered_outside_the_package_trains_from_a_config(tmp_path):
    _, ckpt = two_steps(tmp_path, "hinge", method={"name": "toy_hinge", "margin": 0.5})
    assert ckpt["global_step"] == 2 and ckpt["config"]["method"] == {"name": "toy_hinge",
                                                                      "margin": 0.5}
    assert ckpt["optimizer"]["state"]  # momentum buffers: the optimizer stepped
    with pytest.raises(SpikeguideError, match="method.margin must be positive"):
        parse_config({"method": {"name": "toy_hinge", "margin": 0}})
    with pytest.raises(SpikeguideError, match="unknown config key 'method.margni'"):
        parse_config({"method": {"name": "toy_hinge", "margni": 1}})


def test_a_model_registered_outside_the_package_trains_with_bptt_and_hybrid(tmp_path):
    model = {"name": "toy_net", "width": 1.0, "options": {"channels": 4}}
    ann, _ = two_steps(tmp_path, "toy_ann", model=model, method={"name": "ann"})
    _, bptt = two_steps(tmp_path, "toy_bptt", model=model, method={"name": "bptt"})
    _, hybrid = two_steps(tmp_path, "toy_hybrid", model=model, method={"name": "hybrid"},
                          teacher={"checkpoint": str(ann.run_dir)})
    assert bptt["global_step"] == hybrid["global_step"] == 2
    # two declared stages: the default cut is after the first, its mapping module has 4 channels
    assert hybrid["method"]["mappings.1.0.weight"].shape == (4, 4, 1, 1)
    assert set(bptt["model"]) == set(hybrid["model"])
