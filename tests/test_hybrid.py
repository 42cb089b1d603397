import copy

import pytest
import torch

from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.methods import METHODS
from spikeguide.methods.hybrid import mapping_module
from spikeguide.methods.losses import kd_loss
from spikeguide.models import create_model
from spikeguide.ratepass import rate_forward

Hybrid, RateBP = METHODS.get("hybrid"), METHODS.get("ratebp")


def pair(name="resnet19", T=2, **kw):
    torch.manual_seed(0)
    student = create_model(name, T=T, width=0.125, **kw)
    teacher = create_model(name, spiking=False, width=0.125)
    return student, teacher


def batch(n=4):
    return torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,))


def first_stage_grad(student):
    return sum(p.grad.abs().sum() for p in student.stages[0].parameters() if p.grad is not None)


def test_every_hybrid_branch_sends_gradient_into_the_first_snn_stage():
    student, teacher = pair()
    method = Hybrid(student, Hybrid.Options(cuts=[1, 2, 3]), teacher=teacher).train()
    x, y = batch()
    for i in range(len(method.cuts)):
        student.zero_grad()
        out = rate_forward(student, x, return_stages=True)
        method.cross_entropy(method.branch_logits(out.stages)[i], y).backward()
        assert first_stage_grad(student) > 0, f"branch {method.cuts[i]}"
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_stays_bit_identical_while_mappings_and_student_train():
    student, teacher = pair(repact=True)
    method = Hybrid(student, Hybrid.Options(laf=True), teacher=teacher).train()
    teacher_before = copy.deepcopy(teacher.state_dict())
    mappings_before = copy.deepcopy(method.own_state_dict())
    student_before = copy.deepcopy(student.state_dict())
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        x, y = batch()
        optimizer.zero_grad()
        method.training_step(x, y).loss.backward()
        optimizer.step()
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    own = method.own_state_dict()
    assert set(own) == set(mappings_before) and all(k.startswith("mappings.") for k in own)
    assert any(not torch.equal(v, own[k]) for k, v in mappings_before.items()
               if k.endswith("weight"))
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in student_before.items())


def test_the_loss_is_the_documented_sum():
    student, teacher = pair()
    opts = Hybrid.Options(alpha=0.7, beta=0.3, tau=2.0, cuts=[2])
    method = Hybrid(student, opts, teacher=teacher).train()
    x, y = batch()
    torch.manual_seed(1)
    loss = method.training_step(x, y).loss
    out = rate_forward(student, x, return_stages=True)
    target = teacher(x)
    branch = method.branch_logits(out.stages)[0]
    ce = torch.nn.functional.cross_entropy
    expected = (ce(out.logits, y) + 0.3 * ce(branch, y)
                + 0.7 * (kd_loss(out.logits, target, 2.0) + kd_loss(branch, target, 2.0)))
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_mappings_start_as_identity_convolutions_and_checkpoint_round_trips():
    student, teacher = pair()
    method = Hybrid(student, Hybrid.Options(cuts=[1, 3]), teacher=teacher)
    conv = method.mappings["1"][0].weight
    assert torch.equal(conv[:, :, 0, 0], torch.eye(conv.shape[0]))
    other = Hybrid(copy.deepcopy(student), Hybrid.Options(cuts=[1, 3]), teacher=teacher)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in method.own_state_dict().items()}
    other.load_own_state_dict(state)
    assert all(torch.equal(v, other.own_state_dict()[k]) for k, v in state.items())
    fewer = Hybrid(copy.deepcopy(student), Hybrid.Options(cuts=[1]), teacher=teacher)
    with pytest.raises(SpikeguideError, match="the checkpoint's state of method 'hybrid' does not "
                                              "fit this one \\('mappings.3.0.weight' differs\\): "
                                              "was the run trained with other method options"):
        fewer.load_own_state_dict(state)  # a resume with other cuts


@pytest.mark.parametrize("cuts", [[], [0], [2, 1], [4], [1, 1]])
def test_bad_cuts_are_refused(cuts):
    student, teacher = pair()
    with pytest.raises(SpikeguideError, match="cuts"):
        Hybrid(student, Hybrid.Options(cuts=cuts), teacher=teacher)


def test_hybrid_works_on_every_stage_layout():
    for name in ("resnet20", "resnet18", "vgg11", "sew_resnet34", "preact_resnet34"):
        student, teacher = pair(name)
        method = Hybrid(student, teacher=teacher).train()
        x, y = batch(2)
        method.training_step(x, y).loss.backward()
        assert first_stage_grad(student) > 0, name


def test_default_cuts_are_after_stages_1_to_K_minus_1_as_in_the_paper():
    # Figure 1 of the hybrid paper: ResNet-18 (four stages) has hybrid models M0, M1, M2
    student, teacher = pair("resnet18")
    assert Hybrid(student, teacher=teacher).cuts == [1, 2, 3]
    student, teacher = pair("resnet19")
    method = Hybrid(student, teacher=teacher)
    assert method.cuts == [1, 2] and sorted(method.mappings) == ["1", "2"]


def first_stages(model, k):
    model.stages, model.stage_channels = model.stages[:k], model.stage_channels[:k]
    return model


def test_two_stages_take_the_one_default_cut_and_one_stage_needs_explicit_cuts():
    student, teacher = pair()
    method = Hybrid(first_stages(student, 2), teacher=first_stages(teacher, 2))
    assert method.cuts == [1] and sorted(method.mappings) == ["1"]
    student, teacher = pair()
    with pytest.raises(SpikeguideError) as refused:
        Hybrid(first_stages(student, 1), teacher=first_stages(teacher, 1))
    assert str(refused.value) == ("the hybrid method needs a model of at least two stages (this "
                                  "one has 1) or explicit method.cuts")
    assert Hybrid(student, Hybrid.Options(cuts=[1]), teacher=teacher).cuts == [1]


def undeclared_message(role):
    return (f"the hybrid method needs the {role}'s stages to declare their output channels: "
            "SpikingNet has no stage_channels (pass stage_channels= to SpikingNet in its "
            "builder; docs/extending.md)")


def test_a_model_without_declared_stage_channels_is_refused():
    student, teacher = pair()
    student.stage_channels = None
    with pytest.raises(SpikeguideError) as refused:
        Hybrid(student, teacher=teacher)
    assert str(refused.value) == undeclared_message("student")
    student, teacher = pair()
    del teacher.stage_channels  # a teacher built without the attribute at all
    with pytest.raises(SpikeguideError) as refused:
        Hybrid(student, teacher=teacher)
    assert str(refused.value) == undeclared_message("teacher")
    student, teacher = pair()
    teacher.stage_channels = [1, 2, 3]
    with pytest.raises(SpikeguideError) as refused:
        Hybrid(student, teacher=teacher)
    assert str(refused.value) == ("the stages of the teacher and the student differ in channels: "
                                  "the teacher must be the student's ANN twin")


def test_a_fresh_mapping_module_standardises_each_channel_rather_than_passing_it_on():
    mapping = mapping_module(3).train()
    x = torch.rand(8, 3, 4, 4) * torch.tensor([1.0, 5.0, 0.2]).view(1, 3, 1, 1) + 2
    expected = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        x.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(mapping(x), expected)
    assert not torch.allclose(mapping(x), x)


def test_ratebp_distills_only_with_a_teacher():
    student, teacher = pair()
    with pytest.raises(SpikeguideError, match="teacher"):
        RateBP(student, RateBP.Options(alpha=1.0))
    assert not RateBP.teacher_needed(RateBP.Options())
    assert RateBP.teacher_needed(RateBP.Options(laf=True)) and Hybrid.teacher_needed(Hybrid.Options())
    method = RateBP(student, RateBP.Options(alpha=1.0, laf=True), teacher=teacher).train()
    x, y = batch()
    result = method.training_step(x, y)
    result.loss.backward()
    plain = RateBP(copy.deepcopy(student)).train().training_step(x, y)
    assert result.loss > plain.loss and first_stage_grad(student) > 0


def test_hybrid_options_parse_from_a_config():
    cfg = parse_config({"method": {"name": "hybrid", "cuts": [1, 2], "beta": 0.5, "laf": True}})
    assert cfg.method.options.cuts == [1, 2] and cfg.method.options.beta == 0.5
    assert parse_config({"method": {"name": "hybrid", "beta": 0.0}}).method.options.beta == 0.0
    with pytest.raises(SpikeguideError, match=r"^method.beta must be >= 0, got -1.0$"):
        parse_config({"method": {"name": "hybrid", "beta": -1.0}})


def test_ratebp_and_hybrid_train_through_the_runner(tmp_path):
    from conftest import tiny_config
    from spikeguide.training.checkpoint import load_checkpoint
    from spikeguide.training.run import train

    one_epoch = {"epochs": 1}
    ann = parse_config(tiny_config(tmp_path, name="ann", method={"name": "ann"}, train=one_epoch))
    train(ann)
    rate = train(parse_config(tiny_config(tmp_path, name="rate", method={"name": "ratebp"},
                                          train=one_epoch)))
    hybrid = parse_config(tiny_config(tmp_path, name="hybrid", train=one_epoch,
                                      method={"name": "hybrid", "cuts": [2, 4]},
                                      teacher={"checkpoint": str(ann.run_dir)}))
    summary = train(hybrid)
    assert rate.best_top1 > 10 and summary.best_top1 > 10
    ckpt = load_checkpoint(hybrid.run_dir / "latest.pt")
    assert sorted({k.split(".")[1] for k in ckpt["method"]}) == ["2", "4"]
    assert not any(k.startswith("mappings") for k in ckpt["model"])
    # ratebp distilling (alpha > 0) gets its teacher from the runner
    distilled = parse_config(tiny_config(tmp_path, name="rate_kd", train=one_epoch,
                                         method={"name": "ratebp", "alpha": 1.0},
                                         teacher={"checkpoint": str(ann.run_dir)}))
    assert train(distilled, max_steps=2).stopped is not None
