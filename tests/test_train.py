import dataclasses
import math

import pytest
import torch

from conftest import state_equal, tiny_config
from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.training.checkpoint import load_checkpoint
from spikeguide.training.optim import lr_factor
from spikeguide.training.run import train
from spikeguide.training.runlog import read_metrics


def final_weights(run_dir):
    return load_checkpoint(run_dir / "latest.pt")["model"]


def test_resume_after_epoch_one_matches_uninterrupted(tmp_path):
    full = parse_config(tiny_config(tmp_path, name="full"))
    train(full)
    part = parse_config(tiny_config(tmp_path, name="part"))
    steps_per_epoch = 1437 // 64
    stopped = train(part, max_steps=steps_per_epoch)
    assert stopped.stopped is not None and stopped.stopped.step == steps_per_epoch
    assert stopped.last is None  # the first epoch had not ended
    resumed = train(part, resume=True)
    assert resumed.stopped is None and resumed.last.epoch == 2
    assert state_equal(final_weights(full.run_dir), final_weights(part.run_dir))
    assert [r.epoch for r in read_metrics(part.run_dir)] == [1, 2]
    assert read_metrics(part.run_dir) == [
        dataclasses.replace(r, elapsed_s=m.elapsed_s)
        for r, m in zip(read_metrics(full.run_dir), read_metrics(part.run_dir))]


def test_resume_mid_epoch_matches_uninterrupted(tmp_path):
    full = parse_config(tiny_config(tmp_path, name="full", train={"epochs": 1}))
    train(full)
    part = parse_config(tiny_config(tmp_path, name="part", train={"epochs": 1}))
    assert train(part, max_steps=7).stopped is not None
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
    assert train(cfg, max_steps=2).stopped is not None
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


def trainer_for(cfg):
    from spikeguide.training.build import build_datasets
    from spikeguide.training.run import build_method
    from spikeguide.training.trainer import Trainer

    train_set, test_set = build_datasets(cfg)
    return Trainer(cfg, build_method(cfg, train_set, test_set), train_set, test_set,
                   device=torch.device("cpu"))


def test_channels_last_keeps_neurons_nhwc_and_trains_like_contiguous(tmp_path):
    from spikeguide.neurons import LIF

    for fmt in (False, True):
        train(parse_config(tiny_config(tmp_path, name=f"cl{fmt}", method={"name": "ann"},
                                       train={"epochs": 1, "channels_last": fmt})), max_steps=3)
    a, b = (final_weights(tmp_path / "runs" / f"cl{fmt}") for fmt in (False, True))
    for key in a:  # the same arithmetic in another memory order
        assert torch.allclose(a[key], b[key], atol=1e-5), key

    trainer = trainer_for(parse_config(tiny_config(tmp_path, name="snn",
                                                   train={"channels_last": True})))
    weights = [p for p in trainer.method.student.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    layouts = []
    for m in trainer.method.student.modules():
        if isinstance(m, LIF):
            m.register_forward_hook(lambda mod, inp, out: layouts.append(
                out.dim() != 4 or out.is_contiguous(memory_format=torch.channels_last)))
    x, y = next(iter(trainer.train_loader))
    trainer._train_step(x, y)
    assert layouts and all(layouts)


def test_elapsed_time_in_the_log_counts_the_processes_before_a_resume(tmp_path):
    from spikeguide.training.checkpoint import save_checkpoint

    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1}))
    train(cfg, max_steps=7)
    state = load_checkpoint(cfg.run_dir / "latest.pt")
    assert 0 < state["elapsed_s"] < 3600
    state["elapsed_s"] = 3600.0  # as if the first process had trained for an hour
    save_checkpoint(state, cfg.run_dir / "latest.pt")
    train(cfg, resume=True)
    assert read_metrics(cfg.run_dir)[-1].elapsed_s > 3600


def test_a_checkpoint_without_the_later_keys_resumes_with_their_defaults(tmp_path):
    """Checkpoints of older versions hold no elapsed time, non-finite counts or planned epochs;
    the counts a checkpoint does hold come back."""
    from spikeguide.training.nonfinite import NonFiniteCounts

    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1}))
    trainer = trainer_for(cfg)
    state = trainer.state_dict()
    trainer.elapsed_before, trainer.nonfinite = 50.0, NonFiniteCounts(skipped=3, rollbacks=1)
    trainer.load_state_dict({k: v for k, v in state.items()
                             if k not in ("elapsed_s", "nonfinite", "epochs")})
    assert trainer.elapsed_before == 0.0 and trainer.nonfinite == NonFiniteCounts()
    assert trainer.epochs == 1
    trainer.load_state_dict({**state, "elapsed_s": 12.5, "nonfinite": {"skipped": 2,
                                                                        "rollbacks": 4}})
    assert trainer.elapsed_before == 12.5
    assert trainer.nonfinite == NonFiniteCounts(skipped=2, rollbacks=4)
    assert trainer.state_dict()["nonfinite"] == {"skipped": 2, "rollbacks": 4}


def test_a_checkpoint_of_a_newer_format_is_a_one_line_error(tmp_path):
    from spikeguide.training.checkpoint import FORMAT, save_checkpoint

    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1}))
    train(cfg, max_steps=1)
    state = load_checkpoint(cfg.run_dir / "latest.pt")
    assert state["format"] == FORMAT
    state["format"] = FORMAT + 1
    save_checkpoint(state, cfg.run_dir / "latest.pt")
    with pytest.raises(SpikeguideError, match=f"format {FORMAT + 1}, newer than the format {FORMAT} "
                                              "this version of spikeguide reads: upgrade"):
        train(cfg, resume=True)
