"""The method base class and the option groups the methods share."""

import pytest
import torch

from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.methods import METHODS
from spikeguide.models import create_model


def student(**kw):
    torch.manual_seed(0)
    return create_model("resnet19", T=4, width=0.125, **kw)


@pytest.mark.parametrize("name,options", [
    ("kd", {}), ("enof", {}), ("enof", {"laf": False}), ("ratebp", {"alpha": 0.5}),
    ("ratebp", {"laf": True}), ("hybrid", {}),
])
def test_a_method_that_needs_a_teacher_and_gets_none_is_a_one_line_error(name, options):
    method_cls = METHODS.get(name)
    with pytest.raises(SpikeguideError, match=f"method '{name}' .*teacher.checkpoint") as info:
        method_cls(student(), method_cls.Options(**options))
    assert "\n" not in str(info.value)


def test_methods_without_a_teacher_need_none():
    for name, options in [("bptt", {}), ("ratebp", {}), ("ann", {})]:
        method_cls = METHODS.get(name)
        method_cls(student(), method_cls.Options(**options))


def test_option_groups_keep_flat_keys_their_defaults_and_their_checks():
    ratebp = parse_config({"method": {"name": "ratebp"}}).method.options
    hybrid = parse_config({"method": {"name": "hybrid"}}).method.options
    assert (ratebp.alpha, ratebp.laf, ratebp.tau, ratebp.grad_scale) == (0.0, False, 4.0, "bptt")
    assert (hybrid.alpha, hybrid.laf, hybrid.beta, hybrid.cuts) == (1.0, False, 1.0, None)
    assert parse_config({"method": {"name": "enof"}}).method.options.laf is True
    for name, key, value in [("ratebp", "tau", 0.0), ("hybrid", "laf_lambda", -1.0),
                             ("kd", "alpha", -1.0), ("hybrid", "beta", -0.5),
                             ("ratebp", "grad_scale", "official")]:
        with pytest.raises(SpikeguideError, match=f"method.{key}"):
            parse_config({"method": {"name": name, key: value}})


def rate_grads(method_name, grad_scale, x, y, **options):
    method_cls = METHODS.get(method_name)
    model = student()
    teacher = None
    if method_name == "hybrid":
        teacher = create_model("resnet19", spiking=False, width=0.125)
    method = method_cls(model, method_cls.Options(grad_scale=grad_scale, **options),
                        teacher=teacher).train()
    loss = method.training_step(x, y).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize("method_name", ["ratebp", "hybrid"])
def test_the_official_gradient_scale_divides_the_loss_gradient_by_T_and_keeps_the_loss(method_name):
    torch.manual_seed(1)
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loss, grads = rate_grads(method_name, "bptt", x, y)
    scaled_loss, scaled = rate_grads(method_name, "1/T", x, y)
    assert torch.equal(loss, scaled_loss) and grads.keys() == scaled.keys()
    for name, g in grads.items():  # T = 4: a division by a power of two is exact
        assert torch.equal(scaled[name], g / 4), name


def test_with_event_frames_T_is_the_number_of_frames():
    from spikeguide.methods.options import RateOptions
    from spikeguide.methods.rate import scale_loss_gradient

    model = create_model("vggsnn", T=2, width=0.125, in_channels=2, input_size=32)
    w = torch.ones(3, requires_grad=True)
    loss = scale_loss_gradient((w * 2).sum(), RateOptions("1/T"), model,
                               torch.rand(1, 5, 2, 32, 32))
    loss.backward()
    assert loss.item() == 6.0 and torch.allclose(w.grad, torch.full((3,), 2 / 5))


def test_the_runner_passes_grad_scale_through_a_recipe(tmp_path):
    from conftest import tiny_config
    from spikeguide.training.build import build_model
    from spikeguide.training.run import train

    runs = {}
    for scale, name in [("bptt", "rate_bptt"), ("1/T", "rate_per_step")]:
        cfg = parse_config(tiny_config(tmp_path, name=name, train={"epochs": 1},
                                       method={"name": "ratebp", "grad_scale": scale},
                                       optim={"lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}))
        train(cfg, max_steps=1)
        runs[scale] = torch.load(cfg.run_dir / "latest.pt", weights_only=True)["model"]
    # one plain SGD step: the update of the 1/T run (T = 2) is half the other's
    fresh = parse_config(tiny_config(tmp_path, name="init", method={"name": "ratebp"}))
    torch.manual_seed(fresh.train.seed)  # the initial weights train starts from
    init = build_model(fresh, num_classes=10, in_channels=1, spiking=True).state_dict()
    key = "encoder.conv.weight"
    torch.testing.assert_close(runs["1/T"][key] - init[key], (runs["bptt"][key] - init[key]) / 2)


def test_a_registered_method_is_found_by_its_name_and_knows_it(monkeypatch):
    from spikeguide.methods import Method, register_method

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # undone after the test

    @register_method("plain_copy")
    class PlainCopy(Method):
        pass

    assert METHODS.get("plain_copy") is PlainCopy and PlainCopy.name == "plain_copy"


def test_a_method_without_its_teacher_and_a_checkpoint_that_does_not_fit_are_one_line_errors():
    from spikeguide.methods import Method

    class NeedsTeacher(Method):  # not registered: named by its class
        needs_teacher = True

    student = create_model("resnet20", width=1 / 16, T=2)
    for method, name in ((METHODS.get("ratebp"), "ratebp"), (NeedsTeacher, "NeedsTeacher")):
        with pytest.raises(SpikeguideError) as refused:
            method(student, method.Options(alpha=1.0) if name == "ratebp" else None)
        assert str(refused.value) == (
            f"method {name!r} (with these options) learns from an ANN teacher and got none: set "
            "teacher.checkpoint or teacher.recipe (from Python: pass teacher=, the trained ANN "
            "twin of the student)")

    class OwnHead(Method):
        def __init__(self, student):
            super().__init__(student)
            self.head = torch.nn.Linear(2, 3)

    method = OwnHead(student)
    own = method.own_state_dict()
    assert sorted(own) == ["head.bias", "head.weight"]
    for state, key in (({**own, "extra": torch.zeros(1)}, "extra"),
                       ({"head.weight": own["head.weight"]}, "head.bias"),
                       ({**own, "head.bias": torch.zeros(4)}, "head.bias")):
        with pytest.raises(SpikeguideError) as refused:
            method.load_own_state_dict(state)
        assert str(refused.value) == (
            f"the checkpoint's state of method 'OwnHead' does not fit this one ({key!r} differs): "
            "was the run trained with other method options? Resume with the run's own config.toml")
    method.load_own_state_dict({k: torch.ones_like(v) for k, v in own.items()})
    assert torch.equal(method.head.bias, torch.ones(3))


def test_the_cross_entropy_of_a_method_smooths_its_labels_by_hand():
    from spikeguide.methods import Method

    logits, y = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]), torch.tensor([0, 2])
    log_p = logits.log_softmax(-1)
    nll, uniform = -log_p[torch.arange(2), y].mean(), -log_p.mean()
    method = Method(create_model("resnet20", width=1 / 16, T=2), label_smoothing=0.3)
    torch.testing.assert_close(method.cross_entropy(logits, y), 0.7 * nll + 0.3 * uniform)
