"""Spiking transformers (spikformer, sdt, qkformer): twins, sizes, methods, refusals, counting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_config, write_recipe
from spikeguide.analysis.activity import activity_report
from spikeguide.cli import main
from spikeguide.errors import SpikeguideError
from spikeguide.export.nir import to_nir
from spikeguide.methods import METHODS
from spikeguide.models import create_model
from spikeguide.models.attention import (
    QKAttention,
    SpikeDrivenSelfAttention,
    SpikeMask,
    SpikeMatmul,
    SpikingSelfAttention,
)
from spikeguide.models.layers import TimeSequential
from spikeguide.neurons import LIF

TRANSFORMERS = ["spikformer", "sdt", "qkformer"]
SMALL = dict(width=0.125)  # dims 48 (spikformer), 64 (sdt, qkformer)


def pair(name, **kw):
    torch.manual_seed(0)
    return (create_model(name, spiking=False, **SMALL, **kw),
            create_model(name, spiking=True, **SMALL, **kw))


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_twins_have_identical_keys_and_ann_weights_load_into_the_snn(name):
    ann, snn = pair(name, T=2)
    assert list(ann.state_dict()) == list(snn.state_dict())
    snn.load_state_dict(ann.state_dict())
    out = snn.forward_features(torch.rand(2, 3, 32, 32), return_stages=True)
    assert out.logits_t.shape == (2, 2, 10)
    assert snn.stage_channels == [s.shape[2] for s in out.stages]


@pytest.mark.parametrize("name,stages", [
    ("spikformer", [(384, 8, 8)] * 4),
    ("sdt", [(512, 8, 8)] * 2),
    ("qkformer", [(96, 32, 32), (192, 16, 16), (384, 8, 8)]),
])
def test_paper_cifar_configuration_is_the_default(name, stages):
    model = create_model(name, num_classes=10, spiking=True, T=2)
    assert model.stage_channels == [c for c, _, _ in stages]
    with torch.no_grad():
        out = model.forward_features(torch.rand(1, 3, 32, 32), return_stages=True)
    assert [tuple(s.shape[2:]) for s in out.stages] == stages


def test_spikformer_4_384_has_the_papers_parameter_count():
    # Zhou et al. (ICLR 2023), the CIFAR table: Spikformer-4-384 has 9.32M parameters
    model = create_model("spikformer", num_classes=10, spiking=False)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 9.32


@pytest.mark.parametrize("name,kw,tokens", [
    ("spikformer", dict(depth=1, dim=48), [14]),
    ("sdt", dict(depth=1, dim=64), [14]),
    ("qkformer", dict(depth=4, dim=64), [56, 28, 14]),
])
def test_imagenet_configuration_takes_224_pixels(name, kw, tokens):
    model = create_model(name, stem="imagenet", num_classes=1000, T=1, **kw)
    out = model.forward_features(torch.rand(1, 3, 224, 224), return_stages=True)
    assert [s.shape[-1] for s in out.stages][-len(tokens):] == tokens
    assert out.logits.shape == (1, 1000)


def test_size_options_are_checked():
    with pytest.raises(SpikeguideError, match="unknown stem 'tiny'"):
        create_model("spikformer", stem="tiny")
    with pytest.raises(SpikeguideError, match="qkformer needs depth > 2"):
        create_model("qkformer", depth=2)
    with pytest.raises(SpikeguideError, match="unknown attention"):
        create_model("qkformer", attention="row")


@pytest.mark.parametrize("name,last", [("spikformer", "stages.3.mlp.fc2.act"),
                                       ("sdt", "pool.act"),
                                       ("qkformer", "stages.2.2.mlp.fc2.act")])
def test_repact_makes_the_last_neuron_before_the_head_a_relu(name, last):
    plain = create_model(name, T=2, **SMALL)
    rep = create_model(name, T=2, repact=True, **SMALL)
    assert plain.neurons()[-1][0] == last
    assert isinstance(rep.get_submodule(last), nn.ReLU)
    assert len(rep.neurons()) == len(plain.neurons()) - 1


def test_attention_neurons_fire_at_half_the_threshold():
    model = create_model("spikformer", T=2, neuron_options={"threshold": 2.0}, **SMALL)
    attn = model.stages[0].attn
    assert attn.attn_act.threshold == 1.0 and attn.q.act.threshold == 2.0


def test_spiking_self_attention_against_a_hand_computation():
    """The ANN twin of SSA (ReLU for every neuron) against a per-head loop written out here."""
    torch.manual_seed(0)
    dim, heads, H, W = 4, 2, 1, 3
    attn = SpikingSelfAttention(dim, heads, nn.ReLU).eval()
    x = torch.randn(1, 2, dim, H, W)
    bn = 1 / (1 + 1e-5) ** 0.5  # eval-mode BN with fresh statistics

    def project(layer, tokens):  # tokens [B, N, C] -> relu(BN(W x + b))
        y = tokens @ layer.conv.weight[:, :, 0, 0].T
        if layer.conv.bias is not None:
            y = y + layer.conv.bias
        return torch.relu(y * bn)

    tokens = x[0].flatten(2).transpose(1, 2)  # [B, N, C]
    q, k, v = (project(getattr(attn, n), tokens) for n in "qkv")
    d = dim // heads
    out = torch.zeros_like(q)
    for b in range(2):
        for h in range(heads):
            cs = slice(h * d, (h + 1) * d)
            for n in range(H * W):
                for m in range(H * W):
                    score = (q[b, n, cs] * k[b, m, cs]).sum() * 0.125  # no softmax
                    out[b, n, cs] += score * v[b, m, cs]
    expected = project(attn.proj, torch.relu(out))
    got = attn(x)[0].flatten(2).transpose(1, 2)
    torch.testing.assert_close(got, expected)


def projected(layer, tokens, act=True):
    """``[B, N, C]`` tokens through a 1x1 conv, eval-mode BN with fresh statistics and ReLU."""
    y = tokens @ layer.conv.weight[:, :, 0, 0].T
    if layer.conv.bias is not None:
        y = y + layer.conv.bias
    y = y / (1 + 1e-5) ** 0.5
    return torch.relu(y) if act else y


def test_spike_driven_self_attention_against_a_hand_computation():
    """SDSA's ANN twin: x + BN(conv(Q * relu(sum over tokens of K * V))), Q, K, V from relu(x)."""
    torch.manual_seed(1)
    dim, heads, N = 4, 2, 3
    attn = SpikeDrivenSelfAttention(dim, heads, nn.ReLU).eval()
    x = torch.randn(1, 2, dim, 1, N)
    tokens = x[0].flatten(2).transpose(1, 2)  # [B, N, C]
    q, k, v = (projected(getattr(attn, n), torch.relu(tokens)) for n in "qkv")
    kv = torch.relu((k * v).sum(1, keepdim=True))  # per channel (so per head), over the tokens
    expected = tokens + projected(attn.proj, q * kv, act=False)
    got = attn(x)[0].flatten(2).transpose(1, 2)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("axis", ["token", "channel"])
def test_qk_attention_against_a_hand_computation(axis):
    """QKFormer's ANN twin: relu(BN(conv(A * K))), A = relu(sum of Q over the head's channels)
    per token (``axis="token"``), or over the tokens per channel (``"channel"``)."""
    torch.manual_seed(2)
    dim, heads, N = 4, 2, 3
    attn = QKAttention(dim, heads, nn.ReLU, axis=axis).eval()
    x = torch.randn(1, 2, dim, 1, N)
    tokens = x[0].flatten(2).transpose(1, 2)  # [B, N, C]
    q, k = (projected(getattr(attn, n), tokens) for n in "qk")
    d = dim // heads
    masked = torch.zeros_like(k)
    for h in range(heads):
        cs = slice(h * d, (h + 1) * d)
        a = q[:, :, cs].sum(2 if axis == "token" else 1, keepdim=True)
        masked[:, :, cs] = torch.relu(a) * k[:, :, cs]
    expected = projected(attn.proj, masked)
    got = attn(x)[0].flatten(2).transpose(1, 2)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", TRANSFORMERS)
@pytest.mark.parametrize("method,options", [("bptt", {}), ("bptt", {"tet": True}),
                                            ("kd", {}), ("enof", {})])
def test_one_training_step_under_each_method(name, method, options):
    teacher, student = pair(name, T=2, repact=method == "enof")
    method_cls = METHODS.get(method)
    kw = {} if method == "bptt" else {"teacher": teacher}
    m = method_cls(student, method_cls.Options(**options), **kw).train()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    result = m.training_step(x, y)
    result.loss.backward()
    assert torch.isfinite(result.loss)
    assert student.encoder.conv.weight.grad.abs().sum() > 0
    assert student.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name,module", [("spikformer", "SpikingSelfAttention"),
                                         ("sdt", "SpikeDrivenSelfAttention"),
                                         ("qkformer", "QKAttention")])
@pytest.mark.parametrize("method", ["ratebp", "hybrid"])
def test_rate_based_methods_refuse_attention_in_one_line(name, module, method):
    teacher, student = pair(name, T=2)
    method_cls = METHODS.get(method)
    with pytest.raises(SpikeguideError, match=f"does not support {module}: it multiplies two "
                                              "spike tensors") as info:
        method_cls(student, method_cls.Options(), teacher=teacher)
    assert "\n" not in str(info.value)


def test_nir_export_refuses_attention_in_one_line():
    with pytest.raises(SpikeguideError, match="^stages.0.attn: NIR has no primitive for "
                                              "SpikeDrivenSelfAttention") as info:
        to_nir(create_model("sdt", **SMALL))
    assert "\n" not in str(info.value)


class _TwoProducts(nn.Module):
    """spikes S [N=2, d=3] -> A = S @ S^T (spikes x spikes) -> A @ S (real x spikes)."""

    def __init__(self):
        super().__init__()
        self.lif = LIF(threshold=1.0)
        self.qk = SpikeMatmul()
        self.av = SpikeMatmul()

    def forward(self, x):  # x [B, N, d], one time step
        s = self.lif(x.unsqueeze(0))
        return self.av(self.qk(s, s.transpose(-2, -1)), s)


def test_attention_products_count_as_synaptic_operations_by_hand():
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]).expand(2, 2, 3)  # 2 images
    report = activity_report(_TwoProducts(), [x])  # counts per image
    rows = {r.name: r for r in report.layers}
    # S = x (a current of 1 reaches the threshold). S S^T = [[2, 1], [1, 2]]: 6 pairs of spikes
    # meet; the ANN does 2 * 3 * 2 = 12 MACs.
    assert (rows["qk"].input, rows["qk"].acs, rows["qk"].macs, rows["qk"].ann_macs) == \
        ("spikes", 6, 0, 12)
    # A @ S: each of S's 4 spikes adds a column of A's 2 rows: 8 accumulates; the ANN 12 MACs.
    assert (rows["av"].acs, rows["av"].macs, rows["av"].ann_macs) == (8, 0, 12)


class _Masks(nn.Module):
    """Rows of spikes S masked by each other (the AND: spikes) and S masked by a real tensor
    (real), each into a layer."""

    def __init__(self):
        super().__init__()
        self.lif = LIF(threshold=1.0)
        self.and_mask, self.real_mask = SpikeMask(), SpikeMask()
        self.fc_and, self.fc_real = nn.Linear(3, 1, bias=False), nn.Linear(3, 1, bias=False)

    def forward(self, x):
        s = self.lif(x)
        return self.fc_and(self.and_mask(s[:, :, :1], s[:, :, 1:])).sum(2, keepdim=True) + self.fc_real(self.real_mask(s, x * 0.5))


def test_a_mask_is_spikes_only_when_both_sides_are():
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]).view(1, 1, 2, 3)
    rows = {r.name: r for r in activity_report(_Masks(), [x]).layers}
    # row 0 AND row 1 of S = [0, 0, 1]: one spike into one output
    assert (rows["fc_and"].input, rows["fc_and"].acs) == ("spikes", 1)
    assert (rows["fc_real"].input, rows["fc_real"].macs) == ("real", 6)
    assert set(rows) == {"fc_and", "fc_real"}  # a mask itself costs nothing


def test_energy_report_counts_every_attention_product_of_a_spikformer():
    model = create_model("spikformer", T=2, depth=1, **SMALL)
    report = activity_report(model, [torch.rand(2, 3, 32, 32)])
    rows = {r.name: r for r in report.layers}
    assert {"stages.0.attn.qk", "stages.0.attn.attn_v"} <= set(rows)
    # the SNN's ACs of Q K^T never exceed its ANN twin's dense MACs per step, times T
    assert 0 <= rows["stages.0.attn.qk"].acs <= 2 * rows["stages.0.attn.qk"].ann_macs
    assert rows["stages.0.attn.qk"].input == "spikes"


def test_sdt_masks_keep_spikes_for_the_projection():
    model = create_model("sdt", T=2, depth=1, **SMALL)
    rows = {r.name: r for r in activity_report(model, [torch.rand(2, 3, 32, 32)]).layers}
    assert rows["stages.0.attn.kv_sum"].input == "spikes"
    assert rows["stages.0.attn.proj.conv"].input == "spikes"  # fed by Q AND SN(sum(K AND V))
    assert rows["stages.0.attn.q.conv"].input == "spikes"  # fed by the shortcut neuron


def test_tokens_stay_time_folded():
    """Convolutions of a block see T*B images at once, as the CNNs' do."""
    model = create_model("spikformer", T=3, depth=1, **SMALL)
    shapes = []
    model.stages[0].attn.q.conv.register_forward_hook(lambda m, i, o: shapes.append(i[0].shape[0]))
    model(torch.rand(2, 3, 32, 32))
    assert shapes == [6] and isinstance(model.stages[0].mlp, TimeSequential)


def test_ratebp_training_of_a_transformer_is_a_one_line_cli_error(tmp_path, capsys):
    cfg = tiny_config(tmp_path, model={"name": "spikformer", "width": 0.125},
                      method={"name": "ratebp"})
    code = main(["train", str(write_recipe(tmp_path / "r.toml", cfg))])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("spikeguide: error: rate-based backpropagation does not support "
                          "SpikingSelfAttention")
