import pytest
import torch
from torch import nn

from spikeguide.errors import SpikeguideError
from spikeguide.models import MODELS, checked_weights, create_model, load_twin_weights
from spikeguide.neurons import LIF, is_spiking

SMALL = dict(width=0.125)


def small_input(name, batch=2):
    if name in ("vggsnn", "vggsnn_dvs"):  # event-frame models with a flattening head
        return dict(in_channels=2, input_size=32), torch.rand(batch, 2, 32, 32)
    return dict(in_channels=3), torch.rand(batch, 3, 32, 32)


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("T", [1, 2])
def test_every_model_runs_forward_and_backward_as_ann_and_snn(name, T):
    kwargs, x = small_input(name)
    ann = create_model(name, spiking=False, T=T, **SMALL, **kwargs)
    snn = create_model(name, spiking=True, T=T, **SMALL, **kwargs)
    assert list(ann.state_dict()) == list(snn.state_dict())
    assert not ann.neurons() and snn.neurons()
    for model in (ann, snn):
        out = model.forward_features(x, return_stages=True)
        assert out.logits.shape == (2, 10)
        assert out.logits_t.shape[0] == (T if model.spiking else 1)
        assert len(out.stages) == len(model.stages)
        out.logits.sum().backward()
        assert model.encoder[0].weight.grad is not None


@pytest.mark.parametrize("name", MODELS.names())
def test_ann_weights_load_into_snn_twin(name):
    kwargs, x = small_input(name)
    ann = create_model(name, spiking=False, **SMALL, **kwargs)
    snn = create_model(name, spiking=True, **SMALL, **kwargs)
    load_twin_weights(snn, ann.state_dict())
    for k, v in ann.state_dict().items():
        assert torch.equal(snn.state_dict()[k], v)


def test_spiking_output_feature_is_a_time_average_of_spikes():
    model = create_model("resnet20", T=4, **SMALL).eval()
    feature_t = model.forward_features(torch.rand(2, 3, 32, 32)).feature_t
    # each pooled value of one step is a mean of 0/1 spikes over the 2x2 map
    assert torch.all((feature_t * 4).round() == feature_t * 4)


def test_repact_changes_exactly_the_last_activation():
    plain = create_model("resnet20", T=2, **SMALL)
    rep = create_model("resnet20", T=2, repact=True, **SMALL)
    plain_acts = {n: type(m) for n, m in plain.named_modules() if is_spiking(m) or isinstance(m, nn.ReLU)}
    rep_acts = {n: type(m) for n, m in rep.named_modules() if is_spiking(m) or isinstance(m, nn.ReLU)}
    changed = [n for n in plain_acts if plain_acts[n] is not rep_acts[n]]
    assert changed == [plain.neurons()[-1][0]] == ["stages.3.1.act"]
    assert rep_acts["stages.3.1.act"] is nn.ReLU and plain_acts["stages.3.1.act"] is LIF
    assert list(plain.state_dict()) == list(rep.state_dict())


def test_static_input_is_encoded_once():
    model = create_model("resnet19", T=4, **SMALL)
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    model(torch.rand(3, 3, 32, 32))
    assert calls == [(3, 3, 32, 32)]  # one [B, C, H, W] call, not T of them


def test_frames_input_runs_one_step_per_frame():
    model = create_model("vggsnn", in_channels=2, input_size=32, T=3, **SMALL)
    out = model.forward_features(torch.rand(2, 5, 2, 32, 32))
    assert out.logits_t.shape == (5, 2, 10)


def test_width_scales_channels():
    resnet19 = create_model("resnet19", width=0.25)
    assert resnet19.pool.fc.in_features == 128 and resnet19.classifier.in_features == 64
    assert resnet19.stage_channels == [32, 64, 128]
    assert create_model("resnet50", width=0.25).classifier.in_features == 512


def test_resnet20_channels_option_sets_each_stage_before_width_scales_it():
    wide = create_model("resnet20", width=0.25, channels=[64, 128, 512, 1024])
    assert wide.stage_channels == [16, 32, 128, 256] and wide.classifier.in_features == 256
    assert wide.stages[2][0].residual.conv1.weight.shape == (128, 32, 3, 3)
    assert wide.encoder.conv.out_channels == 16  # the stem keeps its 64, scaled
    twin = create_model("resnet20", width=0.25, spiking=False, channels=[64, 128, 512, 1024])
    load_twin_weights(wide, twin.state_dict())
    assert create_model("resnet20", width=0.25).stage_channels == [16, 32, 64, 128]


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="resnet21"), "unknown model 'resnet21'"),
    (dict(name="resnet18", stem="tiny"), "unknown stem"),
    (dict(name="resnet20", bogus=1), "no option"),
    (dict(name="resnet20", width=0), "width must be positive"),
    (dict(name="resnet20", T=0), "T must be >= 1"),
    (dict(name="resnet20", neuron_options={"tau": 2}), "no option"),
    (dict(name="resnet20", channels=[64, 128, 256]), r"four positive integers.*got \[64, 128, 256\]"),
    (dict(name="resnet20", channels=[64, 128, 0, 512]), "four positive integers"),
])
def test_bad_model_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(SpikeguideError, match=match):
        create_model(**kwargs)


def test_twin_loading_rejects_another_architecture():
    snn = create_model("resnet20", **SMALL)
    resnet19 = create_model("resnet19", spiking=False, **SMALL).state_dict()
    with pytest.raises(SpikeguideError, match="resnet19 weights holds weights of another arch"):
        load_twin_weights(snn, resnet19, "resnet19 weights")
    seven = create_model("resnet20", spiking=False, num_classes=7, **SMALL).state_dict()
    with pytest.raises(SpikeguideError, match=r"classifier.weight has shape \(7, 64\), the model "
                                              r"needs \(10, 64\)"):
        load_twin_weights(snn, seven)


def test_a_plif_twin_loads_ann_weights_but_nothing_else_that_only_one_side_has():
    plif = create_model("resnet20", neuron="plif", **SMALL)
    ann = create_model("resnet20", spiking=False, **SMALL).state_dict()
    load_twin_weights(plif, ann)  # the learnable decays are PLIF's own
    assert all(torch.equal(plif.state_dict()[k], v) for k, v in ann.items())
    with pytest.raises(SpikeguideError, match="another architecture"):
        checked_weights(plif, ann, "an ANN checkpoint")  # not as a twin: every key must match
    back = create_model("resnet20", spiking=False, **SMALL)
    load_twin_weights(back, plif.state_dict())  # and back: the decays have no place in the ANN
    assert all(torch.equal(back.state_dict()[k], v) for k, v in ann.items())
    ann["extra.weight"] = torch.zeros(1)
    with pytest.raises(SpikeguideError, match="'extra.weight' is in only one of them"):
        load_twin_weights(plif, ann)


@pytest.mark.parametrize("name", MODELS.names())
def test_declared_stage_channels_are_the_stage_outputs(name):
    kwargs, x = small_input(name)
    model = create_model(name, T=1, **SMALL, **kwargs)
    out = model.forward_features(x, return_stages=True)
    assert model.stage_channels == [stage.shape[2] for stage in out.stages]


# Parameter counts of the official code's models (Tab-ct/rate-based-backpropagation, model/*.py,
# instantiated with its defaults and the class count shown); the ANN twins here, fed the same
# weights in the same order, also give the same outputs (checked when these models were added).
OFFICIAL_PARAMETERS = [
    ("resnet18", dict(stem="cifar"), 11_173_962),
    ("resnet19", {}, 12_697_994),
    ("vgg11", {}, 11_001_354),
    ("vgg13", {}, 9_416_010),
    ("vggsnn_cifar", dict(num_classes=100), 9_686_884),
    ("vggsnn_dvs", dict(in_channels=2), 9_271_498),
    ("sew_resnet34", dict(num_classes=1000), 21_806_184),
    ("preact_resnet34", dict(num_classes=1000), 21_806_184),
]


@pytest.mark.parametrize("name,kwargs,count", OFFICIAL_PARAMETERS,
                         ids=[p[0] for p in OFFICIAL_PARAMETERS])
def test_models_of_the_official_rate_bp_code_have_its_parameter_count(name, kwargs, count):
    model = create_model(name, spiking=False, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == count


def test_activations_sit_where_each_block_type_puts_them():
    sew, preact, resnet19 = (create_model(n, **SMALL) for n in
                             ("sew_resnet34", "preact_resnet34", "resnet19"))
    first = lambda model: [n for n, _ in model.neurons() if n.startswith("stages.1.0.")]  # noqa: E731
    # SEW: conv-BN-LIF twice in the branch and in the downsampling shortcut, nothing after the sum
    assert first(sew) == ["stages.1.0.residual.act1", "stages.1.0.residual.act2",
                          "stages.1.0.shortcut.act1"]
    # pre-activation: LIF before each convolution of the branch; a plain conv-BN shortcut
    assert first(preact) == ["stages.1.0.residual.act1", "stages.1.0.residual.act2"]
    assert not [n for n, _ in preact.neurons() if n.startswith("stem")]
    # resnet19: the hidden layer's LIF is the last activation, the one RepAct replaces
    assert resnet19.neurons()[-1][0] == "pool.act"
    assert isinstance(create_model("resnet19", repact=True, **SMALL).pool.act, nn.ReLU)


@pytest.mark.parametrize("name", MODELS.names())
def test_repact_turns_every_models_last_neuron_into_a_relu(name):
    kwargs, x = small_input(name)
    plain = create_model(name, T=2, **SMALL, **kwargs)
    rep = create_model(name, T=2, repact=True, **SMALL, **kwargs)
    last = plain.neurons()[-1][0]
    assert isinstance(rep.get_submodule(last), nn.ReLU)
    assert len(rep.neurons()) == len(plain.neurons()) - 1
    assert rep.forward_features(x).logits.shape == (2, 10)
