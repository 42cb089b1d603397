"""A training step never reads a value off the device; the meter is read once per interval."""

import math
import sys

import pytest
import torch

from conftest import tiny_config
from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.methods import METHODS
from spikeguide.models import create_model
from spikeguide.training.distributed import DistInfo
from spikeguide.training.meter import StepMeter
from spikeguide.training.run import train
from spikeguide.training.runlog import read_metrics

# every way a tensor's value reaches the host (on a GPU each waits for the queued kernels)
READS = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist", "cpu", "numpy",
         "nonzero", "masked_select")
# AutoAugment picks each op's samples on the CPU generator's draws, by design on the host
HOST_SIDE = {("nonzero", "apply_policy")}


@pytest.fixture
def count_reads(monkeypatch):
    """A list that collects (read, calling function, module) while ``counting[0]`` is True."""
    reads, counting = [], [False]

    def wrap(name, original):
        def counted(*args, **kwargs):
            caller = sys._getframe(1)
            if counting[0] and (name, caller.f_code.co_name) not in HOST_SIDE:
                reads.append((name, caller.f_code.co_name, caller.f_globals.get("__name__")))
            return original(*args, **kwargs)
        return counted

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "nonzero", wrap("nonzero", torch.nonzero))
    return reads, counting


def trainer_for(tmp_path, method_name, T=2, **options):
    from spikeguide.training.build import build_datasets
    from spikeguide.training.trainer import Trainer

    cfg = parse_config(tiny_config(
        tmp_path, name=method_name, model={"T": T},
        data={"augment": {"crop_padding": 1, "flip": True, "cutout": 2, "roll": 1,
                          "policy": "autoaugment"}},
        train={"log_every": 100}))
    train_set, test_set = build_datasets(cfg)
    kw = dict(num_classes=10, in_channels=train_set.in_channels, width=0.0625)
    student = create_model("resnet20", spiking=True, T=T, **kw)
    method_cls = METHODS.get(method_name)
    teacher = create_model("resnet20", spiking=False, **kw) if method_name in ("enof",
                                                                                "hybrid") else None
    method = method_cls(student, method_cls.Options(**options), teacher=teacher)
    return Trainer(cfg, method, train_set, test_set, device=torch.device("cpu"))


@pytest.mark.parametrize("method_name,T,options", [
    ("bptt", 2, {}), ("enof", 2, {"laf": True}), ("ratebp", 2, {}), ("ratebp", 1, {}),
    ("hybrid", 2, {}),
])
def test_a_training_step_reads_nothing_off_the_device(tmp_path, count_reads, method_name, T,
                                                      options):
    reads, counting = count_reads
    trainer = trainer_for(tmp_path, method_name, T, **options)
    trainer.meter.start_epoch()
    batches = iter(trainer.train_loader)
    counting[0] = True
    for _ in range(3):
        x, y = next(batches)
        trainer._train_step(x, y)
        assert not trainer._should_stop(max_steps=None)
    counting[0] = False
    assert reads == []
    reading = trainer._read()  # the interval's one read
    assert reading.seen == 3 * 64 and 0 <= reading.correct <= reading.seen
    assert math.isfinite(reading.loss_sum) and reading.nonfinite_at is None


def test_the_counter_sees_a_read_in_the_step(tmp_path, count_reads, monkeypatch):
    """The check above can fail: a step that reads its loss is caught."""
    reads, counting = count_reads
    trainer = trainer_for(tmp_path, "bptt")
    add = trainer.meter.add
    monkeypatch.setattr(trainer.meter, "add",
                        lambda loss, logits, y: (float(loss), add(loss, logits, y)))
    trainer.meter.start_epoch()
    x, y = next(iter(trainer.train_loader))
    counting[0] = True
    trainer._train_step(x, y)
    assert [r[0] for r in reads] == ["__float__"]


def test_meter_sums_and_finds_the_first_non_finite_step():
    meter = StepMeter(torch.device("cpu"))
    meter.start_epoch(loss_sum=1.5, correct=3, seen=4, step=10)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 0])
    for loss in (0.5, 0.25):
        meter.add(torch.tensor(loss), logits, y)
        meter.seen += 3
        assert bool(meter.step_finite)
    reading = meter.read(step=12, info=DistInfo())
    assert (reading.loss_sum, reading.correct, reading.seen) == (1.5 + 3 * 0.75, 3 + 4, 4 + 6)
    assert reading.nonfinite_at is None
    for loss in (1.0, math.inf, math.nan, 2.0):
        meter.add(torch.tensor(loss), logits, y)
    assert bool(meter.step_finite)  # the last step's own flag
    reading = meter.read(step=16, info=DistInfo())
    assert reading.nonfinite_at == 13 and reading.nonfinite_loss == math.inf
    meter.add(torch.tensor(1.0), logits, y)
    assert meter.read(step=17, info=DistInfo()).nonfinite_at is None  # a new interval


def test_a_non_finite_loss_stops_by_the_end_of_the_interval_naming_its_step(tmp_path):
    messages = []
    for every in (1, 1000):  # read after every step; only at the end of the epoch
        cfg = parse_config(tiny_config(tmp_path, name=f"nan{every}", optim={"lr": 1e30},
                                       train={"epochs": 1, "log_every": every}))
        with pytest.raises(SpikeguideError, match=r"loss became (nan|inf) at epoch 1 step [1-9];"
                                                  r".*kept.*optim.lr") as err:
            train(cfg)
        messages.append(str(err.value).replace(f"nan{every}", "RUN"))
        assert not (cfg.run_dir / "latest.pt").exists()  # nothing non-finite was saved
    assert messages[0] == messages[1]


def test_log_every_does_not_change_training(tmp_path):
    runs = []
    for every in (1, 7):
        cfg = parse_config(tiny_config(tmp_path, name=f"e{every}",
                                       train={"epochs": 1, "log_every": every}))
        train(cfg)
        runs.append(read_metrics(cfg.run_dir)[0])
    assert runs[0].train_loss == runs[1].train_loss and runs[0].train_top1 == runs[1].train_top1
    with pytest.raises(SpikeguideError, match="train.log_every must be >= 1"):
        parse_config(tiny_config(tmp_path, train={"log_every": 0}))
