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
