"""train.cuda_graph: the decision and its one-line reasons (the capture itself needs a GPU)."""

import logging

import pytest
import torch

from conftest import run_cli, tiny_config, write_recipe
from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.models import create_model
from spikeguide.training.cudagraph import graph_blocker, use_cuda_graph
from spikeguide.training.distributed import DistInfo

CUDA = torch.device("cuda")  # a device object only: nothing runs on it


def cfg_with(tmp_path, **train):
    return parse_config(tiny_config(tmp_path, train=train))


def student(**kw):
    return create_model("resnet20", num_classes=10, width=0.0625, T=2, **kw)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def test_a_plain_spiking_step_on_cuda_can_be_captured(tmp_path):
    model = student()
    assert graph_blocker(cfg_with(tmp_path), CUDA, model, DistInfo(), sgd(model)) is None
    adamw = torch.optim.AdamW(model.parameters())
    assert graph_blocker(cfg_with(tmp_path, amp="bf16"), CUDA, model, DistInfo(), adamw) is None


def test_each_blocker_is_named(tmp_path):
    model = student()
    cfg = cfg_with(tmp_path)
    cases = [
        (cfg, torch.device("cpu"), model, DistInfo(), sgd(model), "this run trains on cpu"),
        (cfg, CUDA, model, DistInfo(0, 2), sgd(model), "not with several processes"),
        (cfg_with(tmp_path, amp="fp16"), CUDA, model, DistInfo(), sgd(model), "loss scaler"),
        (cfg, CUDA, model, DistInfo(), torch.optim.Adagrad(model.parameters()),
         "optimizer Adagrad"),
    ]
    for *args, words in cases:
        assert words in graph_blocker(*args)
    plif = student(neuron="plif")
    assert "(PLIF) hands its learnable decay" in graph_blocker(cfg, CUDA, plif, DistInfo(),
                                                              sgd(plif))
    plif_torch = student(neuron="plif", neuron_options={"backend": "torch"})
    assert graph_blocker(cfg, CUDA, plif_torch, DistInfo(), sgd(plif_torch)) is None
    cumulative = student()
    bn = next(m for m in cumulative.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.momentum = None
    assert "momentum None" in graph_blocker(cfg, CUDA, cumulative, DistInfo(), sgd(cumulative))


def test_auto_on_cpu_logs_one_line_and_true_is_an_error(tmp_path, caplog):
    model = student()
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="spikeguide"):
        assert not use_cuda_graph(cfg_with(tmp_path, cuda_graph="auto"), cpu, model, DistInfo(),
                                  sgd(model))
    assert [r.getMessage() for r in caplog.records] == [
        "train.cuda_graph = auto: the step runs without a CUDA graph: CUDA graphs need a CUDA "
        "device and this run trains on cpu"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spikeguide"):
        assert not use_cuda_graph(cfg_with(tmp_path, cuda_graph="false"), cpu, model, DistInfo(),
                                  sgd(model))
        assert use_cuda_graph(cfg_with(tmp_path, cuda_graph="auto"), CUDA, model, DistInfo(),
                              sgd(model))
    assert len(caplog.records) == 1 and "captured as a CUDA graph" in caplog.records[0].getMessage()
    with pytest.raises(SpikeguideError, match=r"train.cuda_graph = true needs a CUDA device; "
                                              r"this run trains on cpu"):
        use_cuda_graph(cfg_with(tmp_path, cuda_graph="true"), cpu, model, DistInfo(), sgd(model))
    with pytest.raises(SpikeguideError, match=r"train.cuda_graph must be one of"):
        cfg_with(tmp_path, cuda_graph="yes")


def test_true_on_cpu_stops_the_cli_with_one_line(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", tiny_config(
        tmp_path, train={"epochs": 1, "device": "cpu", "cuda_graph": "true"}))
    proc = run_cli("train", str(recipe))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("spikeguide: error: train.cuda_graph = true needs a CUDA "
                                   "device; this run trains on cpu: set it to auto or false")


def test_the_optimizer_reading_its_lr_from_a_tensor_follows_the_schedule():
    """The part of GraphedStep that runs without CUDA: fused SGD reading the learning rate from
    a tensor refilled from the host schedule steps like the plain optimizer."""
    from spikeguide.training.cudagraph import GraphedStep

    torch.manual_seed(0)
    plain, graphed = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    graphed.load_state_dict(plain.state_dict())
    start = plain.weight.detach().clone()
    runs = []
    for model in (plain, graphed):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        runs.append((model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1))))
    step = GraphedStep(lambda x, y: None, runs[1][1])
    step._make_capturable(torch.device("cpu"))
    x = torch.rand(8, 4)
    for _ in range(3):
        for model, opt, schedule in runs:
            opt.zero_grad()
            model(x).square().sum().backward()
            if opt is runs[1][1]:
                with step._tensor_lr():
                    assert torch.is_tensor(opt.param_groups[0]["lr"])
                    opt.step()
            else:
                opt.step()
            schedule.step()
    assert isinstance(runs[1][1].param_groups[0]["lr"], float)  # the schedule sees numbers
    assert runs[1][1].param_groups[0]["fused"]
    assert float(step.lr[0]) == pytest.approx(0.1 / 3)  # the last step's rate
    for p, q in zip(plain.parameters(), graphed.parameters()):
        assert torch.allclose(p, q, atol=1e-7)
    assert not torch.allclose(start, graphed.weight, atol=1e-3)  # it did train
