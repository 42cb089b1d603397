"""The methods' losses and gradients against values computed another way: the LAF term of enof,
ratebp and hybrid from a hand-written softmax and KL on a student that fires, and hybrid's
branches from a hand composition of mapping, teacher stages and teacher head."""

import pytest
import torch
from torch.nn import functional as F

from spikeguide.methods import METHODS
from spikeguide.methods.losses import kd_loss
from spikeguide.models import create_model
from spikeguide.ratepass import rate_forward

TAU, LAMBDA = 2.0, 0.5


def twins(T=2):
    """A tiny ResNet-20 SNN that fires in its last stage, and an ANN twin of other weights."""
    torch.manual_seed(0)
    student = create_model("resnet20", in_channels=1, width=0.0625, T=T)
    teacher = create_model("resnet20", in_channels=1, width=0.0625, spiking=False)
    with torch.no_grad():  # a more confident teacher head: L_AF well above float rounding
        teacher.classifier.weight.mul_(4)
    x, y = torch.rand(8, 1, 16, 16), torch.arange(8) % 10
    return student, teacher, x, y


def hand_softmax(z):
    e = (z - z.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def hand_kl(student_logits, teacher_logits, tau):
    """tau^2 * mean over samples of sum_k p_t (log p_t - log p_s), in float64."""
    p_s = hand_softmax(student_logits.double() / tau)
    p_t = hand_softmax(teacher_logits.double() / tau)
    return tau * tau * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()


def hand_laf(student_feature, teacher_feature, classifier):
    """lambda * L_AF and its gradient with respect to the student's feature:
    lambda * tau * W^T (p_s - p_t) / B, both features through the teacher's W."""
    W, b = classifier.weight.double(), classifier.bias.double()
    z_s, z_t = student_feature.double() @ W.T + b, teacher_feature.double() @ W.T + b
    value = LAMBDA * hand_kl(z_s, z_t, TAU)
    p_s, p_t = hand_softmax(z_s / TAU), hand_softmax(z_t / TAU)
    grad = LAMBDA * TAU * (p_s - p_t) @ W / len(z_s)
    return value.item(), grad


def loss_and_feature_grad(method, x, y):
    """The step's loss, the student's time-averaged feature and the loss's gradient with respect
    to it (read at the student's pool, the graph's last stop before the feature)."""
    seen = []

    def keep(module, inputs, output):
        if output.requires_grad:  # the rate pass (the spiking pass runs without a graph)
            output.retain_grad()
            seen.append(output)

    hook = method.student.pool.register_forward_hook(keep)
    try:
        loss = method.training_step(x, y).loss
        loss.backward()
    finally:
        hook.remove()
    (pooled,) = seen  # [T * B, D], time folded into the batch
    T = len(pooled) // len(x)
    feature = pooled.detach().view(T, len(x), -1).mean(0)
    # feature = mean_t feature_t, so d loss / d feature = T * (d loss / d feature_t) at every t
    grad = pooled.grad.view(T, len(x), -1) * T
    assert torch.allclose(grad, grad[0].expand_as(grad))
    return loss.item(), feature, grad[0]


METHOD_OPTIONS = {
    "enof": {},
    "ratebp": {"alpha": 0.0},
    "hybrid": {"alpha": 0.0, "beta": 1.0, "cuts": [1, 2]},
}


@pytest.mark.parametrize("name", sorted(METHOD_OPTIONS))
def test_laf_adds_lambda_times_the_hand_computed_kl_and_its_gradient(name):
    student, teacher, x, y = twins()
    cls = METHODS.get(name)
    options = dict(METHOD_OPTIONS[name], laf_tau=TAU, laf_lambda=LAMBDA)
    with_laf = cls(student, cls.Options(laf=True, **options), teacher=teacher).train()
    without = cls(student, cls.Options(laf=False, **options), teacher=teacher).train()
    loss, feature, grad = loss_and_feature_grad(with_laf, x, y)
    plain_loss, plain_feature, plain_grad = loss_and_feature_grad(without, x, y)
    assert torch.equal(feature, plain_feature)
    assert feature.mean() > 0.05  # the student fires in its last stage: LAF is far from 0
    with torch.no_grad():
        teacher_feature = teacher.forward_features(x).feature
    value, feature_grad = hand_laf(feature, teacher_feature, teacher.classifier)
    assert value > 0.05
    assert loss - plain_loss == pytest.approx(value, rel=1e-4)
    torch.testing.assert_close((grad - plain_grad).double(), feature_grad, rtol=1e-4, atol=1e-7)


def hand_mapping(mapping, h):
    """The mapping module in training mode: a 1x1 convolution (a channel matrix), then batch
    normalisation with the batch's own mean and biased variance."""
    conv, bn = mapping
    z = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], h)
    mean = z.mean((0, 2, 3), keepdim=True)
    var = z.var((0, 2, 3), unbiased=False, keepdim=True)
    return ((z - mean) / (var + bn.eps).sqrt() * bn.weight.view(1, -1, 1, 1)
            + bn.bias.view(1, -1, 1, 1))


def hand_branch(teacher, mapping, stage_output, cut):
    """M_cut: mapping, then the teacher's stages after ``cut``, its average pool and its
    classifier."""
    h = hand_mapping(mapping, stage_output[0]).unsqueeze(0)  # the rate pass: one step
    for stage in teacher.stages[cut:]:
        h = stage(h)
    feature = h[0].mean((2, 3))
    return feature @ teacher.classifier.weight.T + teacher.classifier.bias


def test_hybrid_branches_and_loss_match_a_hand_composition():
    student, teacher, x, y = twins()
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
    options = dict(alpha=0.7, beta=0.3, tau=2.0, cuts=[1, 2], laf=True, laf_tau=TAU,
                   laf_lambda=LAMBDA)
    method = METHODS.get("hybrid")(student, METHODS.get("hybrid").Options(**options),
                                   teacher=teacher).train()
    torch.manual_seed(3)
    with torch.no_grad():  # mappings away from their initial identity, so that order shows
        for p in method.mappings.parameters():
            p.add_(0.3 * torch.randn_like(p))
    loss = method.training_step(x, y).loss
    out = rate_forward(student, x, return_stages=True)
    with torch.no_grad():
        target = teacher.forward_features(x)
        branches = [hand_branch(teacher, method.mappings[str(k)], out.stages[k - 1], k)
                    for k in (1, 2)]
        for got, expected in zip(method.branch_logits(out.stages), branches, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        z_snn = out.logits
        expected = (F.cross_entropy(z_snn, y)
                    + 0.3 * sum(F.cross_entropy(b, y) for b in branches)
                    + 0.7 * (hand_kl(z_snn, target.logits, 2.0)
                             + sum(hand_kl(b, target.logits, 2.0) for b in branches))
                    + hand_laf(out.feature, target.feature, teacher.classifier)[0])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_kd_adds_alpha_times_the_hand_computed_kl():
    student, teacher, x, y = twins()
    kd = METHODS.get("kd")
    loss = kd(student, kd.Options(alpha=0.7, tau=3.0), teacher=teacher).train().training_step(
        x, y).loss
    with torch.no_grad():
        z_snn, z_ann = student(x), teacher(x)
    expected = F.cross_entropy(z_snn, y) + 0.7 * hand_kl(z_snn, z_ann, 3.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_distillation_kl_of_half_precision_logits_is_computed_in_float32():
    torch.manual_seed(0)
    z_s, z_t = (torch.randn(4, 10).bfloat16() for _ in range(2))
    got = kd_loss(z_s, z_t, 2.0)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(hand_kl(z_s, z_t, 2.0).item(), rel=1e-6)
