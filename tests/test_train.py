import math

import pytest

from conftest import state_equal, tiny_config
from spikeguide.checkpoint import load_checkpoint
from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.logbook import read_metrics
from spikeguide.runner import train
from spikeguide.train import lr_factor


def final_weights(run_dir):
    return load_checkpoint(run_dir / "latest.pt")["model"]


def test_resume_after_epoch_one_matches_uninterrupted(tmp_path):
    full = parse_config(tiny_config(tmp_path, name="full"))
    train(full)
    part = parse_config(tiny_config(tmp_path, name="part"))
    steps_per_epoch = 1437 // 64
    stopped = train(part, max_steps=steps_per_epoch)
    assert stopped["stopped"] and stopped["step"] == steps_per_epoch
    resumed = train(part, resume=True)
    assert not resumed["stopped"]
    assert state_equal(final_weights(full.run_dir), final_weights(part.run_dir))
    assert [r["epoch"] for r in read_metrics(part.run_dir)] == [1, 2]
    assert read_metrics(part.run_dir) == [
        {**r, "elapsed_s": m["elapsed_s"]} for r, m in zip(read_metrics(full.run_dir),
                                                           read_metrics(part.run_dir))]


def test_resume_mid_epoch_matches_uninterrupted(tmp_path):
    full = parse_config(tiny_config(tmp_path, name="full", train={"epochs": 1}))
    train(full)
    part = parse_config(tiny_config(tmp_path, name="part", train={"epochs": 1}))
    assert train(part, max_steps=7)["stopped"]
    assert load_checkpoint(part.run_dir / "latest.pt")["step"] == 7
    train(part, resume=True)
    assert state_equal(final_weights(full.run_dir), final_weights(part.run_dir))


def test_existing_run_is_not_overwritten_silently(tmp_path):
    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1}))
    train(cfg, max_steps=1)
    with pytest.raises(SpikeguideError, match="already holds a run"):
        train(cfg)
    with pytest.raises(SpikeguideError, match="nothing to resume"):
        train(parse_config(tiny_config(tmp_path, name="other")), resume=True)


def test_non_finite_loss_stops_with_the_step_and_remedies(tmp_path):
    cfg = parse_config(tiny_config(tmp_path, optim={"lr": 1e30}, train={"epochs": 1}))
    with pytest.raises(SpikeguideError, match=r"loss became (nan|inf).* epoch 1 step \d+.*optim.lr"):
        train(cfg)


def test_bf16_autocast_trains(tmp_path):
    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1, "amp": "bf16"}))
    assert train(cfg, max_steps=2)["stopped"]
    with pytest.raises(SpikeguideError, match="fp16' needs CUDA"):
        train(parse_config(tiny_config(tmp_path, name="f", train={"amp": "fp16"})))


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10, "cosine", 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 100, 0, "constant", 0.0) == 1.0


def test_checkpoint_holds_what_resume_needs(tmp_path):
    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1}))
    train(cfg)
    state = load_checkpoint(cfg.run_dir / "best.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "step", "config"} <= set(state)
    assert state["epoch"] == 1 and state["step"] == 0
    assert math.isfinite(state["best_top1"])
    assert (cfg.run_dir / "config.toml").read_text().startswith("# resolved config")
    assert list((cfg.run_dir / "tb").iterdir())  # TensorBoard event file
