import math

import pytest
import torch

from spikeguide.errors import SpikeguideError
from spikeguide.models import create_model
from spikeguide.neurons import IF, LIF, PLIF, SURROGATES, NIRNode, get_surrogate, is_spiking
from spikeguide.ratepass import check_model, rate_forward, record_dynamics, record_neuron


def hand_lif(current, decay, threshold, reset):
    """A plain Python loop over scalars: membrane traces and spikes."""
    T, n = current.shape
    spikes, membrane = torch.zeros(T, n), torch.zeros(T, n)
    for i in range(n):
        u = 0.0
        for t in range(T):
            u = decay * u + float(current[t, i])
            s = 1.0 if u >= threshold else 0.0
            membrane[t, i] = u  # before reset
            spikes[t, i] = s
            if s:
                u = {"soft": u - threshold, "hard": 0.0, "half": u - threshold / 2}[reset]
    return spikes, membrane


CURRENT = torch.tensor([[0.6, 1.5, 0.2, 1.0], [0.6, 0.2, 0.2, 1.0], [0.6, 1.5, 0.2, -0.5],
                        [0.1, 0.0, 0.9, 2.5], [0.6, 0.9, 0.2, 0.3]])


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("cls,decay", [(LIF, 0.5), (LIF, 0.9), (IF, 1.0), (PLIF, 0.7)])
def test_spikes_match_hand_loop(cls, decay, reset):
    kwargs = {} if cls is IF else {"decay": decay}
    neuron = cls(threshold=1.0, reset=reset, **kwargs)
    expected, _ = hand_lif(CURRENT, decay, 1.0, reset)
    assert torch.equal(neuron(CURRENT), expected)


def test_hand_loop_itself_is_right_on_a_known_trace():
    # decay 0.5, threshold 1, current 0.6 each step: u = 0.6, 0.9, 1.05 -> spike
    spikes, membrane = hand_lif(torch.full((3, 1), 0.6), 0.5, 1.0, "hard")
    assert spikes[:, 0].tolist() == [0, 0, 1]
    assert membrane[:, 0].tolist() == pytest.approx([0.6, 0.9, 1.05])


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_soft_and_hard_reset_differ_as_defined(reset):
    # one step of 1.5 then 0: soft keeps 0.5 (then 0.25 after decay), hard keeps 0
    neuron = LIF(decay=0.5, reset=reset)
    out = neuron(torch.tensor([[1.5], [0.8]]))
    # soft: u2 = 0.5*0.5 + 0.8 = 1.05 -> spike; hard: u2 = 0.8 -> no spike
    assert out[:, 0].tolist() == ([1.0, 1.0] if reset == "soft" else [1.0, 0.0])


def test_state_does_not_leak_between_calls():
    neuron = LIF()
    x = torch.full((2, 3), 0.7)
    assert torch.equal(neuron(x), neuron(x))


@pytest.mark.parametrize("detach", [True, False])
def test_gradient_matches_unrolled_reference(detach):
    """The multi-step neuron's gradient equals autograd through a hand-unrolled graph."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, requires_grad=True)
    sur = get_surrogate("atan", 0.5)
    LIF(decay=0.5, reset="soft", detach_reset=detach, surrogate=sur)(x).sum().backward()
    g1 = x.grad.clone()
    x.grad = None
    u = torch.zeros(6)
    total = 0
    for t in range(4):
        u = 0.5 * u + x[t]
        h = u - 1.0
        d = sur.derivative(h).detach()  # straight-through: value H(h), gradient d
        s = (h >= 0).float() + d * h - (d * h).detach()
        total = total + s.sum()
        r = s.detach() if detach else s
        u = u - r
    total.backward()
    assert torch.allclose(g1, x.grad, atol=1e-6)


def test_plif_decay_is_learned():
    neuron = PLIF(decay=0.5)
    neuron(torch.rand(4, 8) * 2).sum().backward()
    assert neuron.decay_logit.grad is not None and neuron.decay_logit.grad != 0
    assert float(neuron.membrane_decay().detach()) == pytest.approx(0.5)


CLOSED_FORMS = {
    "rectangle": lambda x, w: (abs(x) < w / 2) / w,
    "triangle": lambda x, w: max(0.0, 1 - abs(x) / w) / w,
    "sigmoid": lambda x, w: math.exp(-x / w) / (w * (1 + math.exp(-x / w)) ** 2),
    "atan": lambda x, w: (1 / (2 * w)) / (1 + (math.pi * x / (2 * w)) ** 2),
    "fast_sigmoid": lambda x, w: (1 / (2 * w)) / (1 + abs(x) / w) ** 2,
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
@pytest.mark.parametrize("width", [0.3, 1.0, 2.5])
def test_surrogate_gradient_matches_closed_form(name, width):
    xs = [-2.0, -0.7, -0.1, 0.0, 0.05, 0.4, 1.3]
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    sur = get_surrogate(name, width)
    from spikeguide.neurons import spike

    out = spike(x, sur)
    assert out.tolist() == [0, 0, 0, 1, 1, 1, 1]  # exact Heaviside, H(0) = 1
    out.sum().backward()
    expected = [CLOSED_FORMS[name](v, width) for v in xs]
    assert x.grad.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_surrogates_integrate_to_one(name):
    x = torch.linspace(-1000, 1000, 2_000_001, dtype=torch.float64)  # heavy 1/x^2 tails
    area = torch.trapezoid(get_surrogate(name, 0.5).derivative(x), x)
    assert float(area) == pytest.approx(1.0, abs=2e-3)


def test_all_surrogates_are_tested():
    assert set(SURROGATES.names()) == set(CLOSED_FORMS)


# (x / w, w * derivative) at the threshold and at the window's edges; just inside an edge is
# 2^-20 w inside (exact in binary for the powers-of-two widths below)
INSIDE = 1 - 2.0 ** -20
EDGES = {
    "rectangle": [(0.0, 1.0), (0.5, 0.0), (-0.5, 0.0), (0.5 * INSIDE, 1.0), (-0.5 * INSIDE, 1.0)],
    "triangle": [(0.0, 1.0), (1.0, 0.0), (-1.0, 0.0), (0.5, 0.5), (-0.5, 0.5), (1.5, 0.0),
                 (INSIDE, 2.0 ** -20)],
    "sigmoid": [(0.0, 0.25), (1.0, math.e / (1 + math.e) ** 2), (-1.0, math.e / (1 + math.e) ** 2)],
    "atan": [(0.0, 0.5), (1.0, 0.5 / (1 + math.pi ** 2 / 4)), (-1.0, 0.5 / (1 + math.pi ** 2 / 4))],
    "fast_sigmoid": [(0.0, 0.5), (1.0, 0.125), (-1.0, 0.125)],
}


@pytest.mark.parametrize("name", sorted(EDGES))
@pytest.mark.parametrize("width", [0.25, 1.0, 4.0])
def test_every_surrogate_at_its_threshold_and_window_edges(name, width):
    points, values = zip(*EDGES[name])
    x = torch.tensor(points, dtype=torch.float64) * width
    got = get_surrogate(name, width).derivative(x) * width
    assert got.tolist() == pytest.approx(values, rel=1e-12, abs=0)


def test_all_surrogates_have_their_edges_tested():
    assert set(SURROGATES.names()) == set(EDGES)


def test_get_surrogate_defaults_names_and_instances():
    default = get_surrogate()
    assert (type(default).__name__, default.width) == ("ATan", 0.5)
    assert repr(default) == "ATan(width=0.5)"
    sigmoid = get_surrogate("sigmoid")
    assert get_surrogate(sigmoid) is sigmoid
    narrower = get_surrogate(sigmoid, 0.125)  # an instance with a width: a new one of its type
    assert (type(narrower), narrower.width, sigmoid.width) == (type(sigmoid), 0.125, 0.25)


@pytest.mark.parametrize("width", [0, -0.5, math.inf, math.nan])
def test_a_surrogate_width_must_be_positive_and_finite(width):
    with pytest.raises(SpikeguideError, match="surrogate width must be a positive number"):
        get_surrogate("triangle", width)


@pytest.mark.parametrize("cls,kwargs,message", [
    (LIF, {"reset": "zero"}, "neuron.reset must be one of ('soft', 'hard'), got 'zero'"),
    (LIF, {"decay": 1.5}, "neuron.decay must be in (0, 1], got 1.5"),
    (LIF, {"decay": 0}, "neuron.decay must be in (0, 1], got 0"),
    (LIF, {"threshold": 0}, "neuron.threshold must be positive, got 0"),
    (LIF, {"surrogate": "erf"}, "unknown surrogate 'erf'"),
    (LIF, {"width": -1.0}, "surrogate width must be a positive number, got -1.0"),
    (IF, {"decay": 0.5}, "the IF neuron has no leak: its decay is 1; use 'lif' for decay < 1"),
    (PLIF, {"decay": 1.0}, "PLIF needs an initial decay below 1 (it is a sigmoid)"),
])
def test_bad_neuron_arguments_are_clear_errors(cls, kwargs, message):
    with pytest.raises(SpikeguideError) as refused:
        cls(**kwargs)
    assert str(refused.value).partition(" (one registered")[0] == message


def settings(neuron):
    return (float(torch.as_tensor(neuron.membrane_decay()).detach()), neuron.threshold,
            neuron.reset, neuron.detach_reset, repr(neuron.surrogate), neuron.backend)


def test_the_lif_family_keeps_its_defaults_and_passes_every_argument_on():
    for neuron, decay in ((LIF(), 0.5), (IF(), 1.0), (PLIF(), 0.5)):
        assert settings(neuron) == (decay, 1.0, "hard", False, "ATan(width=0.5)", "auto")
    given = dict(threshold=0.5, reset="soft", detach_reset=True, surrogate="sigmoid", width=2.0,
                 backend="torch")
    for neuron, decay in ((LIF(decay=0.25, **given), 0.25), (IF(**given), 1.0),
                          (PLIF(decay=0.25, **given), 0.25)):
        assert settings(neuron) == pytest.approx(
            (decay, 0.5, "soft", True, "Sigmoid(width=2)", "torch"))
    assert repr(LIF(decay=0.25, **given)) == (
        "LIF(decay=0.25, threshold=0.5, reset='soft', detach_reset=True, "
        "surrogate=Sigmoid(width=2), backend='torch')")


@pytest.mark.parametrize("cls,decay,dt,kind,params", [
    # tau = dt / (1 - decay), r = tau / dt (forward Euler, docs of LIF.nir_node)
    (LIF, 0.75, 0.5, "LIF", {"tau": 2.0, "r": 4.0, "v_leak": 0.0}),
    (PLIF, 0.5, 2.0, "LIF", {"tau": 4.0, "r": 2.0, "v_leak": 0.0}),
    (IF, 1.0, 0.5, "IF", {"r": 1.0}),
])
def test_the_nir_node_of_the_lif_family_by_hand(cls, decay, dt, kind, params):
    neuron = cls(decay=decay, threshold=0.75)
    node = neuron.nir_node(dt)
    assert node.kind == kind
    assert node.params == pytest.approx({**params, "v_threshold": 0.75, "v_reset": 0.0})
    assert all(type(v) is float for v in node.params.values())
    soft = cls(decay=decay, reset="soft")
    with pytest.raises(SpikeguideError) as refused:
        soft.nir_node(dt)
    assert str(refused.value) == ("NIR neurons reset to a potential; export needs reset='hard' "
                                  "(this one is soft)")


class HalfSoftLIF(LIF):
    """Redefines LIF's reset (half the threshold taken back) and nothing else."""

    def reset_membrane(self, u, s):
        return u - 0.5 * self.threshold * s


class HalfSoftLIFWithGain(HalfSoftLIF):
    def reset_gain(self, u, s, g):
        return 1 - 0.5 * self.threshold * g


class CountedCalls:
    def __init__(self, monkeypatch, module, name):
        self.count, fn = 0, getattr(module, name)

        def wrapper(*args, **kwargs):
            self.count += 1
            return fn(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize("cls", [LIF, IF, PLIF])
def test_the_lif_family_runs_the_fused_kernels(cls, monkeypatch):
    from spikeguide.neurons import base

    fused = CountedCalls(monkeypatch, base, "fused_forward")
    reference = CountedCalls(monkeypatch, base, "reference_loop")
    cls()(CURRENT)
    assert (fused.count, reference.count) == (1, 0)


def test_a_lif_subclass_with_its_own_reset_keeps_none_of_lifs_other_pieces(monkeypatch):
    from spikeguide.neurons import base

    fused = CountedCalls(monkeypatch, base, "fused_forward")
    neuron = HalfSoftLIF(decay=0.5, reset="soft")
    assert torch.equal(neuron(CURRENT), hand_lif(CURRENT, 0.5, 1.0, "half")[0])
    assert fused.count == 0  # LIF's kernels run LIF's reset: the reference loop runs instead
    assert is_spiking(neuron)
    with pytest.raises(SpikeguideError, match="^no fused kernel runs the neuron HalfSoftLIF "
                       "\\(HalfSoftLIF redefines reset_membrane but not kernel_spec\\): use "
                       "backend 'auto' or 'torch'$"):
        HalfSoftLIF(backend="compiled")
    assert HalfSoftLIF(backend="torch").backend == "torch"  # the reference loop is always there
    with pytest.raises(SpikeguideError, match="rate-based backpropagation cannot train the neuron "
                       "HalfSoftLIF: HalfSoftLIF redefines reset_membrane but not reset_gain"):
        check_model(neuron)


def with_neurons(cls, **kw):
    model = create_model("resnet20", width=1 / 16, T=2, **kw)
    for name, _ in model.neurons():
        model.set_submodule(name, cls())
    return model


def test_nir_export_refuses_a_lif_subclass_with_its_own_reset():
    pytest.importorskip("nir")
    from spikeguide.export.nir import to_nir

    with pytest.raises(SpikeguideError, match="HalfSoftLIF redefines reset_membrane but not nir_node"):
        to_nir(with_neurons(HalfSoftLIF).eval())

    class UnknownNode(LIF):
        def nir_node(self, dt):
            return NIRNode("NoSuchNode", {})

    with pytest.raises(SpikeguideError, match="UnknownNode.nir_node names 'NoSuchNode', which is "
                       "not a node type of the nir package"):
        to_nir(with_neurons(UnknownNode).eval())


@pytest.mark.parametrize("method", ["ratebp", "hybrid"])
def test_rate_methods_refuse_a_neuron_without_its_gains_when_built(method):
    from spikeguide.methods import METHODS

    teacher = create_model("resnet20", width=1 / 16, spiking=False)
    with pytest.raises(SpikeguideError, match="cannot train the neuron HalfSoftLIF"):
        METHODS.get(method)(with_neurons(HalfSoftLIF), teacher=teacher)
    METHODS.get(method)(with_neurons(HalfSoftLIFWithGain), teacher=teacher)


def test_a_lif_subclass_with_its_reset_gain_is_recorded_from_its_own_dynamics():
    torch.manual_seed(4)
    neuron = HalfSoftLIFWithGain(decay=0.7, surrogate="sigmoid")
    current = torch.randn(5, 40, dtype=torch.double) + 0.8
    shift = torch.zeros(40, dtype=torch.double, requires_grad=True)
    neuron(current + shift).mean(0).sum().backward()
    check_model(neuron)
    spikes, counts, eligibility = record_dynamics(neuron, current)
    assert torch.equal(spikes, neuron(current)) and torch.equal(counts.double(), spikes.sum(0))
    torch.testing.assert_close(eligibility, shift.grad)


def test_the_rate_recorder_keeps_a_neurons_own_dynamics_records_for_the_rate_pass():
    from spikeguide.ratepass import RateRecorder

    torch.manual_seed(4)
    neuron = HalfSoftLIFWithGain(decay=0.7, surrogate="sigmoid")
    current = torch.randn(5, 2, 20, dtype=torch.double) + 0.8  # [T, B, N]
    recorder = RateRecorder(neuron)
    with torch.no_grad(), recorder.recording(5):
        spikes = neuron(current)
    (counts, T, eligibility), = recorder.records[neuron]
    expected = record_dynamics(neuron, current)
    assert torch.equal(spikes, expected[0]) and T == 5
    assert torch.equal(counts, expected[1].unsqueeze(0))  # [1, B, N]: the rate pass's layout
    torch.testing.assert_close(eligibility, expected[2].unsqueeze(0), rtol=0, atol=0)


@pytest.mark.parametrize("reset,detach", [("soft", True), ("soft", False), ("hard", True),
                                          ("hard", False)])
def test_the_generic_recorder_agrees_with_the_lif_fast_path(reset, detach):
    """LIF's own gains, run through the generic recorder, give the fast path's records."""
    torch.manual_seed(5)
    neuron = LIF(0.6, 1.0, reset, detach, "atan").double()
    current = torch.randn(6, 3, 20, dtype=torch.double) + 0.8
    generic = record_dynamics(neuron, current)
    fast = record_neuron(current, *neuron.kernel_spec())
    assert torch.equal(generic[0], fast[0]) and torch.equal(generic[1], fast[1])
    torch.testing.assert_close(generic[2], fast[2], rtol=1e-12, atol=1e-12)


def test_ratebp_records_the_lif_family_by_the_fast_path(monkeypatch):
    from spikeguide.ratepass import recorder

    generic = CountedCalls(monkeypatch, recorder, "record_dynamics")
    fast = CountedCalls(monkeypatch, recorder, "record_neuron")
    model = create_model("resnet20", width=1 / 16, T=2, neuron="plif")
    rate_forward(model, torch.rand(2, 3, 16, 16))
    assert generic.count == 0 and fast.count == len(model.neurons())


def test_dynamics_no_backend_declares_run_the_reference_loop():
    from spikeguide.neurons.kernels import resolve_backend

    class OtherSpec(tuple):
        """A spec type no fused backend runs."""

    x = torch.zeros(2, 3)
    assert resolve_backend("auto", x, OtherSpec) == "torch"
    assert resolve_backend("torch", x, OtherSpec) == "torch"
    with pytest.raises(SpikeguideError, match="the 'fused' neuron backend does not run OtherSpec"):
        resolve_backend("fused", x, OtherSpec)
    assert resolve_backend("fused", x) == "fused"  # LIF's spec, the default


def test_a_neuron_with_a_spec_type_no_backend_declares_runs_the_reference_loop(monkeypatch):
    from collections import namedtuple

    from spikeguide.neurons import base
    from spikeguide.neurons.kernels import LIFSpec

    OwnSpec = namedtuple("OwnSpec", LIFSpec._fields)

    class OwnSpecLIF(LIF):
        def kernel_spec(self):
            return OwnSpec(*super().kernel_spec())

    fused = CountedCalls(monkeypatch, base, "fused_forward")
    reference = CountedCalls(monkeypatch, base, "reference_loop")
    assert torch.equal(OwnSpecLIF()(CURRENT), hand_lif(CURRENT, 0.5, 1.0, "hard")[0])
    assert (fused.count, reference.count) == (0, 1)


def test_a_neuron_defaults_to_threshold_1_and_the_atan_surrogate():
    from spikeguide.neurons import SpikingNeuron

    class Bare(SpikingNeuron):
        def charge(self, u, current):
            return u + current

        def reset_membrane(self, u, s):
            return u * (1 - s)

    neuron = Bare()
    assert (neuron.threshold, repr(neuron.surrogate), neuron.backend) == (
        1.0, "ATan(width=0.5)", "auto")


def test_a_neuron_must_define_its_dynamics_and_subclass_the_contract():
    from spikeguide.neurons import SpikingNeuron, register_neuron

    class NoReset(SpikingNeuron):
        def charge(self, u, current):
            return u + current

    class NoDynamics(SpikingNeuron):
        pass

    for cls, missing in ((NoReset, "reset_membrane"), (NoDynamics, "charge and reset_membrane")):
        with pytest.raises(SpikeguideError) as refused:
            cls()
        assert str(refused.value) == (f"the neuron {cls.__name__} must define {missing} "
                                      "(see docs/extending.md)")
    with pytest.raises(TypeError, match="needs a SpikingNeuron subclass"):
        register_neuron("relu_neuron")(torch.nn.ReLU)
