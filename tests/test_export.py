"""NIR export: written, read back, parameters equal to the model's, and the graph computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spikeguide import SpikeguideError
from spikeguide.export.nir import export_nir, fold_batchnorm, to_nir
from spikeguide.models import create_model
from spikeguide.neurons import is_spiking

nir = pytest.importorskip("nir")


def trained_looking(name="resnet20", **kw):
    """A small model whose batch norms have non-trivial statistics and affine parameters."""
    torch.manual_seed(0)
    net = create_model(name, width=1 / 16, T=3, **kw)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 1.0)  # positive shifts make the neurons fire
    return net.eval()


def simulate(graph, x: torch.Tensor, T: int) -> torch.Tensor:
    """Run a NIR graph of Conv2d/Affine/AvgPool2d/Flatten/LIF/IF nodes in discrete time."""
    preds = {n: [s for s, d in graph.edges if d == n] for n in graph.nodes}
    order, done = [], {"input"}
    while len(done) < len(graph.nodes):  # topological order
        for n in graph.nodes:
            if n not in done and all(p in done for p in preds[n]):
                order.append(n), done.add(n)
    t_ = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    membrane, outputs = {}, []
    for _ in range(T):
        values = {"input": x}
        for n in order:
            node, inp = graph.nodes[n], sum(values[p] for p in preds[n])
            if isinstance(node, nir.Conv2d):
                out = F.conv2d(inp, t_(node.weight), t_(node.bias), tuple(node.stride),
                               tuple(node.padding), tuple(node.dilation), node.groups)
            elif isinstance(node, nir.Affine):
                out = inp @ t_(node.weight).T + t_(node.bias)
            elif isinstance(node, nir.AvgPool2d):
                out = F.avg_pool2d(inp, tuple(node.kernel_size), tuple(node.stride), tuple(node.padding))
            elif isinstance(node, nir.Flatten):
                out = inp.flatten(1)
            elif isinstance(node, (nir.LIF, nir.IF)):
                v = membrane.get(n, torch.zeros_like(inp))
                if isinstance(node, nir.LIF):  # forward Euler with dt = 1
                    v = (1 - 1 / t_(node.tau)) * v + t_(node.r) / t_(node.tau) * inp
                else:
                    v = v + t_(node.r) * inp
                out = (v >= t_(node.v_threshold)).float()
                membrane[n] = torch.where(out > 0, t_(node.v_reset), v)
            else:  # Output
                out = inp
            values[n] = out
        outputs.append(values["output"])
    return torch.stack(outputs).mean(0)


@pytest.mark.parametrize("neuron", ["lif", "plif", "if"])
def test_round_trip_parameters_match(neuron, tmp_path):
    net = trained_looking(neuron=neuron)
    path = tmp_path / "net.nir"
    export_nir(net, path, input_shape=(3, 32, 32))
    graph = nir.read(str(path))
    modules = dict(net.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    assert sorted(n for n, v in graph.nodes.items() if isinstance(v, nir.Conv2d)) == sorted(convs)
    for name in convs:  # the folded conv computes bn(conv(x)) of the model in eval mode
        base = name.rstrip("0123456789")  # ...conv2 -> ...bn2
        conv, bn = modules[name], modules[base[: -len("conv")] + "bn" + name[len(base):]]
        node = graph.nodes[name]
        x_in = torch.randn(2, conv.in_channels, 8, 8)
        got = F.conv2d(x_in, torch.from_numpy(node.weight), torch.from_numpy(node.bias), conv.stride,
                       conv.padding)
        torch.testing.assert_close(got, bn(conv(x_in)), atol=1e-5, rtol=1e-5)
    neurons = [(n, m) for n, m in modules.items() if is_spiking(m)]
    assert sorted(n for n, v in graph.nodes.items() if isinstance(v, (nir.LIF, nir.IF))) == \
        sorted(n for n, _ in neurons)
    for name, m in neurons:
        node = graph.nodes[name]
        decay = float(torch.as_tensor(m.membrane_decay()).detach())
        if neuron == "if":
            assert isinstance(node, nir.IF) and np.all(node.r == 1)
        else:
            np.testing.assert_allclose(1 - 1 / node.tau, decay, rtol=1e-6)
            np.testing.assert_allclose(node.r / node.tau, 1.0, rtol=1e-6)
        assert np.all(node.v_threshold == m.threshold) and np.all(node.v_reset == 0)
    fc = graph.nodes["classifier"]
    np.testing.assert_array_equal(fc.weight, net.classifier.weight.detach().numpy())
    np.testing.assert_array_equal(fc.bias, net.classifier.bias.detach().numpy())
    # residual blocks: the shortcut and the residual branch both feed the block's neuron
    assert sorted(s for s, d in graph.edges if d == "stages.1.0.act") == \
        ["stages.1.0.residual.conv2", "stages.1.0.shortcut.conv"]
    assert sorted(s for s, d in graph.edges if d == "stages.0.1.act") == \
        ["stages.0.0.act", "stages.0.1.residual.conv2"]
    # the graph computes the model: same logits when simulated step by step
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(simulate(graph, images, net.T), net(images), atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_matches_eval_mode():
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    w, b = fold_batchnorm(conv, bn.eval())
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(F.conv2d(x, w, b, padding=1), bn(conv(x)), atol=1e-5, rtol=1e-5)


def test_unexportable_models_say_why():
    with pytest.raises(SpikeguideError, match="ReLU"):
        to_nir(trained_looking(repact=True))
    with pytest.raises(SpikeguideError, match="soft"):
        to_nir(trained_looking(neuron_options={"reset": "soft"}))
    with pytest.raises(SpikeguideError, match="spiking"):
        to_nir(create_model("resnet20", width=1 / 16, spiking=False))


def test_export_command_writes_the_runs_snn(tmp_path):
    from conftest import run_cli, tiny_config, write_recipe
    from spikeguide.config import load_config
    from spikeguide.training.run import train

    recipe = write_recipe(tmp_path / "snn.toml", tiny_config(tmp_path, train={"epochs": 1}))
    cfg = load_config(recipe)
    train(cfg, max_steps=2)  # stopped after two steps: latest.pt only
    out = tmp_path / "model.nir"
    proc = run_cli("export", str(cfg.run_dir), "--out", str(out), "--latest")
    assert proc.returncode == 0, proc.stderr
    graph = nir.read(str(out))
    assert graph.nodes["input"].input_type["input"].tolist() == [1, 8, 8]  # digits at 8x8
    assert sum(isinstance(n, nir.LIF) for n in graph.nodes.values()) == 19
    bad = run_cli("export", str(cfg.run_dir), "--out", str(out), "--format", "onnx")
    assert bad.returncode == 2
    assert "unknown export format 'onnx'; choose one of nir, hub" in bad.stderr


def test_export_of_a_checkpoint_without_its_input_shape_asks_for_it(tmp_path):
    from conftest import tiny_config
    from spikeguide.commands.export import export_run
    from spikeguide.config import parse_config
    from spikeguide.training.checkpoint import load_checkpoint, save_checkpoint
    from spikeguide.training.run import train

    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1}))
    train(cfg, max_steps=1)
    state = load_checkpoint(cfg.run_dir / "latest.pt")
    del state["data"]["frame_shape"]  # as written before checkpoints recorded it
    save_checkpoint(state, cfg.run_dir / "latest.pt")
    with pytest.raises(SpikeguideError, match="does not record its input shape.*--frame-shape"):
        export_run(cfg.run_dir, tmp_path / "m.nir", prefer="latest")
    export_run(cfg.run_dir, tmp_path / "m.nir", prefer="latest", frame_shape=(1, 8, 8))
    assert nir.read(str(tmp_path / "m.nir")).nodes["input"].input_type["input"].tolist() == [1, 8, 8]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "vggsnn"])
def test_snntorch_imports_the_export_and_computes_the_same_outputs(name, tmp_path):
    """snnTorch's NIR importer, a maintained third-party reader, runs the exported file: its
    per-step outputs equal the model's to float rounding (hard-reset LIF; see docs/speed.md for
    what its importer does not read)."""
    import contextlib
    import io

    snntorch_utils = pytest.importorskip("snntorch.utils")
    from snntorch.import_nir import import_from_nir

    kw = {"in_channels": 2, "input_size": 16} if name == "vggsnn" else {}
    model = trained_looking(name, neuron_options={"decay": 0.5}, **kw)
    shape = (kw.get("in_channels", 3), 16, 16)
    export_nir(model, tmp_path / "m.nir", shape, dt=1e-4)  # snnTorch's importer assumes 1e-4
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints warnings
        imported = import_from_nir(nir.read(str(tmp_path / "m.nir")))
    x = torch.randn(1, *shape)  # batch 1: the importer's Flatten counts the batch dimension
    with torch.no_grad():
        expected = model.forward_features(x).logits_t[:, 0]
        snntorch_utils.reset(imported)
        steps = [imported(x) for _ in range(model.T)]
    got = torch.stack([(s[0] if isinstance(s, tuple) else s).reshape(-1) for s in steps])
    assert (expected[0] - expected[-1]).abs().max() > 0.05  # neurons fire: outputs vary in time
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,channels", [("resnet19", 3), ("vgg11", 3), ("vggsnn_dvs", 2)])
def test_the_graph_of_other_zoo_models_computes_the_model(name, channels):
    extra = dict(in_channels=2, input_size=32) if name == "vggsnn_dvs" else {}
    net = trained_looking(name, **extra)
    graph = to_nir(net, input_shape=(channels, 32, 32))
    images = torch.randn(2, channels, 32, 32)
    torch.testing.assert_close(simulate(graph, images, net.T), net(images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["sew_resnet34", "preact_resnet34"])
def test_models_with_max_pooling_are_refused_by_name(name):
    with pytest.raises(SpikeguideError, match="MaxPool2d has no NIR counterpart"):
        to_nir(trained_looking(name))
