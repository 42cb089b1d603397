import json
import math
import re

import pytest
import torch
from torch import nn

from conftest import state_equal, tiny_config
from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.methods import METHODS
from spikeguide.methods.losses import kd_loss, laf_loss
from spikeguide.models import create_model
from spikeguide.training.run import train


def hand_kd(student_logits, teacher_logits, tau):
    """tau^2 * mean over samples of sum_k p_t log(p_t / p_s), in plain Python floats."""

    def softmax(z):
        e = [math.exp(v / tau) for v in z]
        return [v / sum(e) for v in e]

    total = 0.0
    for zs, zt in zip(student_logits, teacher_logits):
        ps, pt = softmax(zs), softmax(zt)
        total += sum(t * math.log(t / s) for s, t in zip(ps, pt))
    return tau * tau * total / len(student_logits)


def test_kd_loss_is_the_hand_computed_kl():
    zs, zt = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], [[3.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    got = kd_loss(torch.tensor(zs), torch.tensor(zt), tau=2.0)
    assert got.item() == pytest.approx(hand_kd(zs, zt, 2.0), rel=1e-6)
    assert kd_loss(torch.tensor(zt), torch.tensor(zt), tau=2.0).item() == pytest.approx(0, abs=1e-7)


def test_laf_loss_is_the_hand_computed_kl_through_the_classifier():
    W = [[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]]
    b = [0.1, 0.0, -0.2]
    classifier = nn.Linear(2, 3)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor(W))
        classifier.bias.copy_(torch.tensor(b))
    f_snn, f_ann = [[0.5, 1.0], [0.0, 0.25]], [[2.0, 0.0], [1.0, 3.0]]

    def logits(f):
        return [[sum(w * x for w, x in zip(row, fi)) + bk for row, bk in zip(W, b)] for fi in f]

    tau = 3.0
    expected = hand_kd(logits(f_snn), logits(f_ann), tau)
    got = laf_loss(torch.tensor(f_snn), torch.tensor(f_ann), classifier, tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected > 0.1  # the example is not trivially zero


def twins(width=0.0625, T=2, repact=False):
    torch.manual_seed(0)
    student = create_model("resnet20", in_channels=1, width=width, T=T, repact=repact)
    teacher = create_model("resnet20", in_channels=1, width=width, spiking=False)
    return student, teacher


def one_step(method, x, y):
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    method.train()
    loss, _ = method.training_step(x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


@pytest.mark.parametrize("name,options", [("enof", {"laf": True}), ("kd", {})])
def test_a_distillation_step_trains_the_student_and_leaves_the_teacher_bit_identical(name, options):
    student, teacher = twins()
    cls = METHODS.get(name)
    method = cls(student, cls.Options(**options), teacher=teacher)
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = torch.randn(8, 1, 16, 16), torch.arange(8) % 10
    one_step(method, x, y)
    assert state_equal(teacher.state_dict(), teacher_before)  # classifier and BN stats included
    assert all(p.grad is None for p in teacher.parameters())
    changed = [k for k, p in student.named_parameters() if not torch.equal(p, student_before[k])]
    assert "classifier.weight" in changed and "encoder.conv.weight" in changed


def test_laf_adds_the_weighted_feature_loss_and_its_gradient():
    student, teacher = twins()
    x, y = torch.randn(8, 1, 16, 16), torch.arange(8) % 10
    opts = METHODS.get("enof").Options
    with_laf = METHODS.get("enof")(student, opts(laf=True, laf_tau=2.0, laf_lambda=0.5),
                                   teacher=teacher)
    without = METHODS.get("enof")(student, opts(laf=False), teacher=teacher)
    student.eval()  # the same forward pass (BN in eval) for both losses
    out = student.forward_features(x)
    expected = nn.functional.cross_entropy(out.logits, y) + 0.5 * laf_loss(
        out.feature, teacher.forward_features(x).feature, teacher.classifier, 2.0)
    assert with_laf.training_step(x, y).loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert without.training_step(x, y).loss.item() == pytest.approx(
        nn.functional.cross_entropy(out.logits, y).item(), rel=1e-6)


def test_repact_makes_the_output_feature_full_precision():
    x = torch.randn(4, 1, 16, 16) * 3  # 16x16 input: the last stage is 1x1, pooling is identity
    plain, _ = twins(T=2)
    out = plain.forward_features(x, return_stages=True)
    assert set(out.stages[-1].unique().tolist()) <= {0.0, 1.0}  # spikes at every step
    assert set(out.feature_t.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out.feature, out.feature_t.mean(0))  # the feature: a time average of spikes
    assert set(out.feature.unique().tolist()) <= {0.0, 0.5, 1.0}

    rep, _ = twins(T=2, repact=True)
    feature = rep.forward_features(x).feature
    assert ((feature != 0) & (feature != 1)).any()
    assert not torch.isin(feature, torch.tensor([0.0, 0.5, 1.0])).all()


def test_repact_is_a_model_switch_only():
    # one switch, so a method option and the model cannot disagree
    with pytest.raises(SpikeguideError, match="unknown config key 'method.repact'"):
        parse_config({"method": {"name": "enof", "repact": True}})
    cfg = parse_config({"method": {"name": "enof"}, "model": {"repact": True}})
    assert cfg.model.repact and cfg.method.options.laf


@pytest.mark.parametrize("table,match", [
    ({"name": "enof", "laf_tau": 0}, "method.laf_tau must be positive"),
    ({"name": "enof", "laf_lambda": -1}, "method.laf_lambda must be >= 0"),
    ({"name": "kd", "tau": -2}, "method.tau must be positive"),
    ({"name": "kd", "alpha": -0.5}, "method.alpha must be >= 0"),
])
def test_bad_distillation_options_name_the_key(table, match):
    with pytest.raises(SpikeguideError, match=match):
        parse_config({"method": table})


def test_teacher_recipe_is_trained_first_evaluated_once_and_recorded(tmp_path, caplog):
    from conftest import write_recipe

    teacher_dir = tmp_path / "teacher"
    recipe = write_recipe(tmp_path / "ann.toml", tiny_config(
        tmp_path, name="ann", method={"name": "ann"}, train={"epochs": 1, "progress": False}))
    student = parse_config(tiny_config(
        tmp_path, name="snn", method={"name": "enof"}, train={"epochs": 1, "progress": False},
        teacher={"recipe": str(recipe), "checkpoint": str(teacher_dir), "init_student": True}))
    with caplog.at_level("WARNING", logger="spikeguide"):
        summary = train(student)
    # a teacher.checkpoint that does not exist yet is not used as the output folder silently
    assert f"training the teacher recipe {recipe} into {teacher_dir} first (teacher.checkpoint " \
        "does not exist yet)" in caplog.text
    assert (teacher_dir / "best.pt").is_file()  # trained where the student looks for it
    record = json.loads((student.run_dir / "teacher.json").read_text())
    teacher_top1 = json.loads((teacher_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["checkpoint"] == str(teacher_dir)
    assert summary.teacher_top1 == record["top1"] == pytest.approx(teacher_top1["test_top1"])

    mtime = (teacher_dir / "latest.pt").stat().st_mtime_ns
    train(parse_config(tiny_config(
        tmp_path, name="snn2", method={"name": "kd"}, train={"epochs": 1, "progress": False},
        teacher={"recipe": str(recipe), "checkpoint": str(teacher_dir)})))
    assert (teacher_dir / "latest.pt").stat().st_mtime_ns == mtime  # finished: not retrained


def test_the_student_initialized_from_a_teacher_recipe_names_its_run_directory(tmp_path, caplog):
    from conftest import write_recipe

    recipe = write_recipe(tmp_path / "ann.toml", tiny_config(
        tmp_path, name="ann", method={"name": "ann"}, train={"epochs": 1, "progress": False}))
    student = parse_config(tiny_config(
        tmp_path, name="snn", method={"name": "enof"}, train={"epochs": 1, "progress": False},
        teacher={"recipe": str(recipe), "init_student": True}))
    with caplog.at_level("INFO", logger="spikeguide"):
        train(student, max_steps=1)
    assert f"student initialized from teacher {tmp_path / 'runs' / 'ann'}\n" in caplog.text


def test_a_teacher_of_another_width_is_refused(tmp_path):
    teacher = train(parse_config(tiny_config(tmp_path, name="ann", method={"name": "ann"},
                                             train={"epochs": 1, "progress": False})))
    student = parse_config(tiny_config(
        tmp_path, name="snn", method={"name": "enof"}, model={"width": 0.125},
        teacher={"checkpoint": teacher.run_dir}))
    with pytest.raises(SpikeguideError, match="must be the student's ANN twin"):
        train(student)


def test_a_method_with_a_teacher_says_how_to_name_one(tmp_path):
    with pytest.raises(SpikeguideError, match="teacher.checkpoint .* or teacher.recipe"):
        train(parse_config(tiny_config(tmp_path, method={"name": "kd"})))


@pytest.mark.parametrize("model, student_change, match", [
    ("resnet20", {"data": {"options": {"size": 12}}},
     r"inputs of shape \[1, 8, 8\].*has \[1, 12, 12\]"),
    ("resnet18", {"model": {"options": {"stem": "cifar"}}}, r"encoder.* of shape \[4, 1, 7, 7\]"),
])
def test_a_teacher_that_does_not_fit_the_students_data_is_refused_before_training(
        tmp_path, capsys, model, student_change, match):
    from conftest import write_recipe
    from spikeguide.cli import main

    teacher = write_recipe(tmp_path / "ann.toml", tiny_config(
        tmp_path, name="ann", method={"name": "ann"}, train={"epochs": 1},
        model={"name": model}))
    assert main(["train", str(teacher)]) == 0
    base = tiny_config(tmp_path, name="snn", method={"name": "enof"}, model={"name": model},
                       teacher={"checkpoint": str(tmp_path / "runs" / "ann")})
    student = write_recipe(tmp_path / "snn.toml", {
        **base, **{k: {**base.get(k, {}), **v} for k, v in student_change.items()}})
    capsys.readouterr()
    assert main(["train", str(student)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(match, err), err
    assert not (tmp_path / "runs" / "snn" / "metrics.jsonl").exists()  # nothing trained


def test_a_teacher_recipe_follows_the_students_data_and_teacher_set(tmp_path, capsys, monkeypatch):
    from conftest import write_recipe
    from spikeguide.cli import main
    from spikeguide.config import read_toml

    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path / "ann.toml", tiny_config(
        tmp_path, name="ann", method={"name": "ann"}, train={"epochs": 3}))
    student = write_recipe(tmp_path / "snn.toml", tiny_config(
        tmp_path, name="snn", method={"name": "kd"}, train={"epochs": 1},
        teacher={"recipe": "ann.toml"}))  # relative to the working directory
    code = main(["train", str(student), "--set", "data.train_subset=300",
                 "--set", "teacher.set.train.epochs=1", "--set", "teacher.set.optim.lr=0.02"])
    assert code == 0
    teacher = read_toml(tmp_path / "runs" / "ann" / "config.toml")
    assert teacher["data"]["train_subset"] == 300  # followed
    assert teacher["train"]["epochs"] == 1 and teacher["optim"]["lr"] == 0.02  # teacher.set
    assert [json.loads(ln)["epoch"] for ln in
            (tmp_path / "runs" / "ann" / "metrics.jsonl").read_text().splitlines()] == [1]
    # the student's choice can be overridden for the teacher alone
    cfg = parse_config({**tiny_config(tmp_path, name="snn2", method={"name": "kd"},
                                      data={"train_subset": 300}),
                        "teacher": {"recipe": "ann.toml",
                                    "set": {"data": {"train_subset": 200}}}})
    from spikeguide.training.teacher import followed_data, teacher_config

    assert followed_data(cfg) == {} and teacher_config(cfg).data.train_subset == 200


def test_teacher_recipe_can_be_unset_and_a_missing_one_names_the_key(tmp_path, capsys):
    from conftest import write_recipe
    from spikeguide.cli import main

    student = write_recipe(tmp_path / "snn.toml", tiny_config(
        tmp_path, name="snn", method={"name": "kd"}, teacher={"recipe": "nowhere/ann.toml"}))
    assert main(["train", str(student)]) == 2
    err = capsys.readouterr().err
    assert "teacher.recipe 'nowhere/ann.toml' does not exist" in err and "working directory" in err
    assert main(["train", str(student), "--set", "teacher.recipe="]) == 2
    assert "needs a teacher: set teacher.checkpoint" in capsys.readouterr().err


def test_a_teacher_folder_of_another_config_names_the_keys_and_the_way_out(tmp_path, monkeypatch):
    from conftest import write_recipe

    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path / "ann.toml", tiny_config(
        tmp_path, name="ann", method={"name": "ann"}, train={"epochs": 1, "progress": False}))
    student = tiny_config(tmp_path, name="snn", method={"name": "kd"},
                          train={"epochs": 1, "progress": False}, teacher={"recipe": "ann.toml"})
    train(parse_config(student))
    other = {**student, "teacher": {"recipe": "ann.toml", "set": {"optim": {"lr": 0.01}}}}
    with pytest.raises(SpikeguideError, match=r"differs in optim.lr\): train this one elsewhere "
                                              r"with --set name=OTHER \(a teacher: "
                                              r"teacher.checkpoint=DIR\)"):
        train(parse_config({**other, "name": "snn2"}))


@pytest.mark.parametrize("val_split", [None, 200])
def test_a_student_starts_from_its_teachers_best_epoch_only_where_validation_chose_it(
        tmp_path, val_split):
    import shutil
    from pathlib import Path

    from spikeguide.training.build import build_run_datasets, load_model
    from spikeguide.training.run import build_method
    from spikeguide.training.teacher import teacher_weights

    data = {} if val_split is None else {"val_split": val_split}
    runs = [Path(train(parse_config(tiny_config(
        tmp_path, name=f"ann{seed}", method={"name": "ann"}, data=data,
        train={"epochs": 1, "seed": seed}))).run_dir) for seed in (0, 1)]
    teacher_dir = runs[0]
    # best.pt now holds other weights than latest.pt, as after a best epoch before the last
    shutil.copyfile(runs[1] / "latest.pt", teacher_dir / "best.pt")
    chosen = teacher_dir / ("latest.pt" if val_split is None else "best.pt")
    assert teacher_weights(str(teacher_dir)) == str(chosen)
    assert teacher_weights(str(runs[1] / "best.pt")) == str(runs[1] / "best.pt")  # a file as named

    cfg = parse_config(tiny_config(tmp_path, name="snn", method={"name": "enof"}, data=data,
                                   teacher={"checkpoint": str(teacher_dir), "init_student": True}))
    train_set = build_run_datasets(cfg)[0]
    student = build_method(cfg, train_set).student
    expected = load_model(str(chosen))[0].state_dict()
    other = load_model(str(runs[1 if val_split is None else 0] / "latest.pt"))[0].state_dict()
    key = "classifier.weight"
    assert torch.equal(student.state_dict()[key], expected[key])
    assert not torch.equal(expected[key], other[key])
