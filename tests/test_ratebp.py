import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spikeguide.errors import SpikeguideError
from spikeguide.models import MODELS, create_model
from spikeguide.neurons import LIF, get_surrogate, lif_multistep
from spikeguide.ratepass import RateRecorder, check_model, rate_forward, record_neuron
from spikeguide.ratepass.eligibility import record_dynamics, record_eager

RULES = [("soft", True), ("soft", False), ("hard", True), ("hard", False)]


def small(name, T, batch=4, **kw):
    extra = dict(in_channels=2, input_size=32) if name in ("vggsnn", "vggsnn_dvs") else {}
    model = create_model(name, T=T, width=0.125, **extra, **kw).double()
    return model, torch.rand(batch, extra.get("in_channels", 3), 32, 32, dtype=torch.double)


def rate_trainable(name):
    """The rate pass takes the model (spiking transformers are refused: test_transformers.py)."""
    try:
        check_model(small(name, T=1)[0])
    except SpikeguideError:
        return False
    return True


RATE_MODELS = [name for name in MODELS.names() if rate_trainable(name)]


def grads(model):
    return {n: p.grad for n, p in model.named_parameters()}


def assert_same_grads(model, reference):
    for name, g in grads(model).items():
        ref = grads(reference)[name]
        if ref is None or not ref.abs().sum():  # a PLIF decay has no gradient at T = 1 either
            assert g is None or not g.abs().sum(), name
            continue
        torch.testing.assert_close(g, ref, rtol=1e-9, atol=1e-12, msg=name)


def ce_backward(logits, y):
    F.cross_entropy(logits, y).backward()


@pytest.mark.parametrize("name", RATE_MODELS)
def test_at_one_step_the_rate_gradient_equals_autograd_through_the_spiking_dynamics(name):
    torch.manual_seed(0)
    model, x = small(name, T=1, neuron_options=dict(backend="torch"))
    reference = copy.deepcopy(model)
    y = torch.randint(0, 10, (4,))
    ce_backward(rate_forward(model, x).logits, y)
    ce_backward(reference(x), y)
    assert_same_grads(model, reference)


@pytest.mark.parametrize("reset,detach", RULES)
@pytest.mark.parametrize("neuron,surrogate", [("lif", "atan"), ("if", "triangle"),
                                              ("plif", "sigmoid"), ("lif", "rectangle")])
def test_one_step_equality_holds_for_every_neuron_reset_surrogate_and_repact(neuron, surrogate,
                                                                            reset, detach):
    torch.manual_seed(1)
    model, x = small("resnet19", T=1, neuron=neuron, surrogate=surrogate, repact=True,
                     neuron_options=dict(reset=reset, detach_reset=detach, backend="torch"))
    reference = copy.deepcopy(model)
    y = torch.randint(0, 10, (4,))
    ce_backward(rate_forward(model, x).logits, y)
    ce_backward(reference(x), y)
    assert_same_grads(model, reference)


# One LIF neuron, decay 0.5, threshold 1, triangle surrogate g(x) = max(0, 1 - |x|), input
# currents 0.8, 0.7, 0.3. Spikes 0, 1, 0 (rate 1/3). Step by step (a = reset gain, see the docs):
#   t1: u = 0.8, g = 0.8, kappa = 1;  no spike: soft a = 1 - g = 0.2, hard a = 1 - s - u g = 0.36
#   t2: u = 1.1, g = 0.9, kappa = 1 + 0.5 a1 -> 1.5 (detached), 1.1 (soft), 1.18 (hard)
#       spike: soft a = 1 - 0.9 = 0.1, hard detached a = 0, hard a = 1 - 1 - 1.1 * 0.9 = -0.99
#   t3: u = 0.35 (soft: 0.1 left after reset) or 0.3 (hard), g = u,
#       kappa = 1 + 0.5 a2 kappa2 -> 1.75 (soft detached), 1.055 (soft), 1 (hard detached),
#       1 + 0.5 * -0.99 * 1.18 = 0.4159 (hard)
HAND = {
    ("soft", True): (0.8 + 0.9 * 1.5 + 0.35 * 1.75) / 3,
    ("soft", False): (0.8 + 0.9 * 1.1 + 0.35 * 1.055) / 3,
    ("hard", True): (0.8 + 0.9 * 1.5 + 0.3 * 1.0) / 3,
    ("hard", False): (0.8 + 0.9 * 1.18 + 0.3 * 0.4159) / 3,
}


def record_generic(current, decay, threshold, reset, detach, surrogate):
    """The recorder for any neuron (from its own dynamics), on the LIF."""
    return record_dynamics(LIF(decay, threshold, reset, detach, surrogate), current)


# the fast path (the C++ kernel on CPU), the eager loop and the generic recorder: each alone
RECORDERS = [record_neuron, record_eager, record_generic]


@pytest.mark.parametrize("record", RECORDERS)
@pytest.mark.parametrize("reset,detach", RULES)
def test_eligibility_of_one_lif_layer_matches_the_hand_computed_trace(reset, detach, record):
    current = torch.tensor([0.8, 0.7, 0.3], dtype=torch.double).view(3, 1)
    spikes, counts, eligibility = record(current, 0.5, 1.0, reset, detach,
                                         get_surrogate("triangle", 1.0))
    assert spikes.flatten().tolist() == [0, 1, 0]
    assert counts.item() == 1 and counts.dtype == torch.uint8  # kept as bytes for T < 256
    assert eligibility.item() == pytest.approx(HAND[reset, detach], abs=1e-12)


@pytest.mark.parametrize("record", RECORDERS)
def test_the_recorded_eligibility_is_zero_at_the_rectangle_window_edges(record):
    # one step: the eligibility is the surrogate at u - threshold (width 0.5: 2 strictly inside
    # |u - threshold| < 0.25, else 0)
    inside = 0.25 - 2.0 ** -12
    current = 1 + torch.tensor([[-0.3, -0.25, -inside, inside, 0.25, 0.3]])
    spikes, counts, eligibility = record(current, 0.5, 1.0, "hard", False,
                                         get_surrogate("rectangle", 0.5))
    assert counts.tolist() == [0, 0, 0, 1, 1, 1]
    assert eligibility.tolist() == [0, 0, 2, 2, 0, 0]


@pytest.mark.parametrize("reset,detach", RULES)
@pytest.mark.parametrize("decay,surrogate", [(0.5, "atan"), (1.0, "triangle"), (0.8, "sigmoid")])
def test_eligibility_is_the_surrogate_derivative_of_the_rate_for_a_constant_input_shift(
        reset, detach, decay, surrogate):
    torch.manual_seed(2)
    sur = get_surrogate(surrogate)
    current = torch.randn(6, 50, dtype=torch.double) + 0.8
    shift = torch.zeros(50, dtype=torch.double, requires_grad=True)
    lif_multistep(current + shift, decay, 1.0, reset, detach, sur).mean(0).sum().backward()
    spikes, counts, eligibility = record_neuron(current, decay, 1.0, reset, detach, sur)
    torch.testing.assert_close(eligibility, shift.grad)
    assert torch.equal(spikes, LIF(decay, 1.0, reset, detach, sur)(current))
    assert torch.equal(counts.double(), spikes.sum(0))


def test_chunks_of_neurons_give_the_same_records(monkeypatch):
    from spikeguide.ratepass import eligibility

    current = torch.randn(5, 3, 7, 11) + 1
    whole = record_eager(current, 0.6, 1.0, "hard", False, get_surrogate("atan"))
    monkeypatch.setattr(eligibility, "CHUNK", 10)  # the eager loop's chunks (the kernel has none)
    for a, b in zip(whole, record_eager(current, 0.6, 1.0, "hard", False, get_surrogate("atan")),
                    strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", RATE_MODELS)
def test_the_rate_pass_gives_the_spiking_time_averages(name):
    torch.manual_seed(3)
    model, x = small(name, T=4)
    reference = copy.deepcopy(model)
    out = rate_forward(model, x, return_stages=True)
    ref = reference.forward_features(x, return_stages=True)
    torch.testing.assert_close(out.logits, ref.logits)
    for rate, stage in zip(out.stages, ref.stages):
        torch.testing.assert_close(rate[0], stage.mean(0))
    for a, b in zip(model.buffers(), reference.buffers()):  # BN running stats: updated once
        torch.testing.assert_close(a, b)


def test_convolutions_run_step_by_step_give_the_same_spiking_pass():
    torch.manual_seed(6)
    model, x = small("resnet19", T=3, batch=5)  # the static encoder's 5 samples split 2, 2, 1
    reference = copy.deepcopy(model)
    recorder = RateRecorder(model)
    with torch.no_grad(), recorder.recording(3):
        out = model.forward_features(x, return_stages=True)
    ref = reference.forward_features(x, return_stages=True)
    assert all(torch.equal(a, b) for a, b in zip(out.stages, ref.stages))


@pytest.mark.parametrize("conv_steps,calls", [(1, 2 + 1), (2, 1 + 1)])
def test_the_methods_conv_steps_reach_the_spiking_pass(conv_steps, calls):
    # T = 2: the spiking pass calls a convolution T / conv_steps times, the rate pass once
    from spikeguide.methods import METHODS

    RateBP = METHODS.get("ratebp")
    model, x = small("resnet19", T=2)
    conv, count = model.stages[0][0].residual.conv1, []
    conv_forward = conv._conv_forward
    conv._conv_forward = lambda *args: count.append(1) or conv_forward(*args)
    method = RateBP(model, RateBP.Options(conv_steps=conv_steps, alpha=0.0, laf=False))
    method.training_step(x, torch.zeros(len(x), dtype=torch.long))
    assert len(count) == calls


def test_event_frames_are_averaged_into_one_rate_step():
    torch.manual_seed(4)
    model = create_model("vggsnn", T=5, width=0.125, in_channels=2, input_size=32).double()
    frames = torch.rand(3, 5, 2, 32, 32, dtype=torch.double)
    out = rate_forward(copy.deepcopy(model), frames)
    torch.testing.assert_close(out.logits, model(frames))
    assert out.logits_t.shape == (1, 3, 10)


def saved_bytes(model, x):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        rate_forward(model, x).logits.sum().backward()
    return total


def test_the_replayed_batch_norm_uses_the_recorded_statistics_and_the_layers_affine_and_eps():
    from spikeguide.ratepass.autograd import recorded_batch_norm

    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, eps=0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        bn.bias.copy_(torch.tensor([0.3, -0.2, 1.0]))
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    mean, var = x.detach().mean((0, 2, 3)), x.detach().var((0, 2, 3), unbiased=False)
    out = recorded_batch_norm(x, bn, mean, var)
    channel = (slice(None), None, None)
    by_hand = ((x - mean[channel]) / (var[channel] + 0.1).sqrt() * bn.weight[channel]
               + bn.bias[channel])
    torch.testing.assert_close(out, by_hand)
    # with the batch's own statistics its backward is training-mode batch norm's
    grad = torch.randn_like(out)
    mine = torch.autograd.grad(out, (x, bn.weight, bn.bias), grad)
    reference = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, 0.1)
    torch.testing.assert_close(mine, torch.autograd.grad(reference, (x, bn.weight, bn.bias), grad))


def test_the_backward_graph_does_not_grow_with_T():
    torch.manual_seed(5)
    model, x = small("resnet19", T=1)
    one = saved_bytes(model, x)
    model.T = 8
    assert saved_bytes(model, x) == one


def test_plif_decay_gets_no_gradient_from_ratebp():
    model, x = small("resnet19", T=4, neuron="plif")
    rate_forward(model, x).logits.sum().backward()
    decays = [p for n, p in model.named_parameters() if n.endswith("decay_logit")]
    assert decays and all(p.grad is None for p in decays)
    assert model.encoder[0].weight.grad.abs().sum() > 0


def test_forwards_are_restored_even_when_a_pass_fails():
    model, x = small("resnet19", T=2)
    recorder = RateRecorder(model)
    with pytest.raises(RuntimeError):
        with torch.no_grad(), recorder.recording(2):
            model(x[:, :1])  # wrong channel count
    assert not any("forward" in m.__dict__ for m in model.modules())
    with pytest.raises(SpikeguideError, match="more often"):
        with recorder.replaying():
            model(x)
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_an_unknown_nonlinear_layer_is_refused():
    model, x = small("resnet19", T=2)
    model.stem.add_module("gelu", nn.GELU())
    with pytest.raises(SpikeguideError, match="GELU"):
        RateRecorder(model)


@pytest.mark.parametrize("method", ["ratebp", "hybrid"])
def test_rate_methods_freeze_the_neurons_own_parameters(method):
    # no gradient ever reaches them, so data-parallel training must not wait for one
    from spikeguide.methods import METHODS

    model, x = small("resnet19", T=2, neuron="plif")
    teacher = (create_model("resnet19", spiking=False, width=0.125).double() if method == "hybrid"
               else None)
    built = METHODS.get(method)(model, teacher=teacher).double()  # mappings made in float
    decays = [p for n, p in model.named_parameters() if n.endswith("decay_logit")]
    assert decays and not any(p.requires_grad for p in decays)
    assert all(p.requires_grad for n, p in model.named_parameters() if "decay_logit" not in n)
    built.training_step(x, torch.zeros(len(x), dtype=torch.long)).loss.backward()


def test_layers_the_rate_pass_cannot_route_are_refused_with_the_reason():
    from spikeguide.models.attention import SpikeAttention
    from spikeguide.ratepass.recorder import rule_for
    from spikeguide.training.distributed import CPUSyncBatchNorm

    def refusal(module):
        with pytest.raises(SpikeguideError) as err:
            rule_for(module)
        return str(err.value)

    attention = next(m for m in create_model("spikformer", width=1 / 16, T=2).modules()
                     if isinstance(m, SpikeAttention))
    assert refusal(attention) == (
        "rate-based backpropagation does not support SpikingSelfAttention: it multiplies two "
        "spike tensors, and the time average of a product is not the product of the rates "
        "(docs/ratebp.md); train spiking transformers with bptt, kd or enof")
    assert refusal(CPUSyncBatchNorm(3).train()) == (
        "rate-based backpropagation records the batch statistics of plain batch norm only, not "
        "of CPUSyncBatchNorm: train it without train.sync_batchnorm")
    assert rule_for(CPUSyncBatchNorm(3).eval()) is None  # running statistics: linear
    assert refusal(nn.GELU()) == (
        "rate-based backpropagation does not support the layer GELU: it must know whether the "
        "layer is linear over time (conv, linear, average pooling, BN) or how to replace it by "
        "its time average (spiking neurons, ReLU, max pooling)")
    assert rule_for(nn.Linear(2, 2)) is None and rule_for(nn.Sequential(nn.GELU())) is None
