import pytest

from spikeguide.config import apply_overrides, dump_toml, load_config, parse_config, to_dict
from spikeguide.errors import SpikeguideError


def write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_recipe_and_overrides(tmp_path):
    path = write(tmp_path, '[model]\nname = "resnet19"\nT = 2\n[method]\nname = "bptt"\ntet = true\n')
    cfg = load_config(path, ["train.epochs=3", "optim.lr=0.05", "data.root=/some/where",
                             "model.options.stem=\"cifar\""])
    assert cfg.model.name == "resnet19" and cfg.model.T == 2
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.05 and cfg.data.root == "/some/where"
    assert cfg.method.options.tet is True
    assert cfg.model.options == {"stem": "cifar"}


def test_integers_widen_to_float_but_not_the_reverse():
    assert parse_config({"optim": {"lr": 1}}).optim.lr == 1.0
    with pytest.raises(SpikeguideError, match="'train.epochs' must be int, got float 2.5"):
        parse_config({"train": {"epochs": 2.5}})
    with pytest.raises(SpikeguideError, match="'train.epochs' must be int, got bool"):
        parse_config({"train": {"epochs": True}})


@pytest.mark.parametrize("data,match", [
    ({"train": {"epoch": 3}}, "unknown config key 'train.epoch' \\(did you mean 'train.epochs'\\?\\)"),
    ({"modle": {}}, "unknown config key 'modle' \\(did you mean 'model'\\?\\)"),
    ({"method": {"name": "bptt", "tau": 2}}, "unknown config key 'method.tau'"),
    ({"method": {"name": "magic"}}, "unknown method 'magic'"),
    ({"model": {"name": "resnet21"}}, "unknown model 'resnet21'"),
    ({"model": {"T": 0}}, "model.T must be >= 1, got 0"),
    ({"data": {"batch_size": -4}}, "data.batch_size must be >= 1, got -4"),
    ({"data": {"name": "cifar11"}}, "unknown dataset 'cifar11'"),
    ({"neuron": {"reset": "zero"}}, "neuron.reset must be one of"),
    ({"neuron": {"options": {"leak": 0.3}}}, "neuron 'lif' has no option\\(s\\) \\['leak'\\]; its "
     "options: decay, threshold, reset, detach_reset, backend"),
    ({"neuron": {"options": {"decay": 0.3}}}, "neuron.options.decay: set it as neuron.decay"),
    ({"neuron": {"kind": "if", "decay": 0.5}}, "the IF neuron has no leak"),
    ({"surrogate": {"width": -1}}, "surrogate width must be a positive number"),
    ({"optim": {"lr": 0}}, "optim.lr must be positive"),
    ({"train": {"amp": "fp8"}}, "train.amp must be one of"),
    ({"data": {"loader": "disk"}}, "data.loader must be one of \\('auto', 'memory', 'stream'\\)"),
    ({"data": {"ram_share": 1.5}}, "data.ram_share must be in \\(0, 1\\], got 1.5"),
    ({"data": {"augment": {"random_resized_crop": True, "crop_scale": [0.5, 0.1]}}},
     "random_resized_crop needs 0 < crop_scale"),
])
def test_bad_configs_name_the_key(data, match):
    with pytest.raises(SpikeguideError, match=match):
        parse_config(data)


def test_bad_override_syntax():
    with pytest.raises(SpikeguideError, match="key=value"):
        apply_overrides({}, ["train.epochs"])


def test_missing_and_invalid_recipe_files(tmp_path):
    with pytest.raises(SpikeguideError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(SpikeguideError, match="not valid TOML"):
        load_config(write(tmp_path, "[model\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["method.name=\"bptt\"", "method.tet_lambda=0.05", "model.width=0.5"])
    again = load_config(write(tmp_path, dump_toml(cfg)))
    assert to_dict(again) == to_dict(cfg)


def test_unset_neuron_fields_take_the_neurons_defaults():
    assert to_dict(parse_config({}))["neuron"] == {
        "kind": "lif", "decay": 0.5, "threshold": 1.0, "reset": "hard", "detach_reset": False,
        "backend": "auto", "fuse_bn": "auto", "options": {}}
    assert parse_config({"neuron": {"kind": "if"}}).neuron.decay == 1.0


def test_a_config_resolved_before_neuron_defaults_were_filled_in_is_the_same_config():
    """Run directories written earlier held threshold, reset, detach_reset and backend but no
    decay: they must still compare equal to a fresh default config (reuse, resume)."""
    earlier = {"neuron": {"kind": "lif", "threshold": 1.0, "reset": "hard", "detach_reset": False,
                          "backend": "auto"}}
    assert to_dict(parse_config(earlier)) == to_dict(parse_config({}))
