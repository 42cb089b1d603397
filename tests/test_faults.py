"""Killed, signalled and distributed runs, as separate processes."""

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    ONE_THREAD,
    SRC,
    assert_two_processes_match_one,
    run_cli,
    start_cli,
    state_equal,
    tiny_config,
    write_recipe,
)
from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.training.checkpoint import load_checkpoint
from spikeguide.training.run import train


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    # long enough that every kill lands before the end, even with the fast neuron kernels
    settings = dict(train={"epochs": 4, "checkpoint_every": 3})
    reference = parse_config(tiny_config(tmp_path, name="ref", **settings))
    train(reference)
    recipe = write_recipe(tmp_path / "r.toml", tiny_config(tmp_path, name="killed", **settings))
    run_dir = tmp_path / "runs" / "killed"
    latest = run_dir / "latest.pt"
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        before = latest.stat().st_mtime_ns if latest.exists() else 0
        proc = start_cli("train", str(recipe), "--resume" if before else "--overwrite")
        # start-up time varies with load: wait for fresh progress, then kill at a random moment
        while proc.poll() is None and not (latest.exists() and latest.stat().st_mtime_ns != before):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
    assert kills == 3
    done = run_cli("train", str(recipe), "--resume", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert state_equal(load_checkpoint(run_dir / "latest.pt")["model"],
                       load_checkpoint(reference.run_dir / "latest.pt")["model"])


KILL_DURING_SAVE = """
import os, signal, sys
import torch
import spikeguide.training.checkpoint as ck
saves = 0
real_save = torch.save
def dying_save(obj, f):
    global saves
    saves += 1
    if saves == 3:  # the third checkpoint: write part of it, then die
        f.write(b"half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, f)
ck.torch.save = dying_save
from spikeguide.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    settings = dict(train={"epochs": 1, "checkpoint_every": 4})
    reference = parse_config(tiny_config(tmp_path, name="ref", **settings))
    train(reference)
    recipe = write_recipe(tmp_path / "r.toml", tiny_config(tmp_path, name="killed", **settings))
    env = {**os.environ, "PYTHONPATH": SRC, **ONE_THREAD}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, "train", str(recipe)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    run_dir = tmp_path / "runs" / "killed"
    assert load_checkpoint(run_dir / "latest.pt")["global_step"] == 8  # the second save survives
    done = run_cli("train", str(recipe), "--resume", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert state_equal(load_checkpoint(run_dir / "latest.pt")["model"],
                       load_checkpoint(reference.run_dir / "latest.pt")["model"])


def test_sigterm_finishes_the_step_checkpoints_and_says_how_to_resume(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml",
                          tiny_config(tmp_path, train={"epochs": 50, "checkpoint_every": 2}))
    proc = start_cli("train", str(recipe))
    while proc.poll() is None and not (tmp_path / "runs" / "tiny" / "latest.pt").exists():
        time.sleep(0.05)  # training has started
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "resume with: spikeguide train" in out and "--resume" in out
    state = load_checkpoint(tmp_path / "runs" / "tiny" / "latest.pt")
    assert state["global_step"] > 0


def test_two_gloo_processes_match_one_process(tmp_path):
    settings = dict(train={"epochs": 1, "sync_batchnorm": True})
    recipe = assert_two_processes_match_one(
        tmp_path, tiny_config(tmp_path, name="single", **settings),
        tiny_config(tmp_path, name="ddp", **settings), steps=4)
    # a full epoch: one process writes the log (one line, one TensorBoard file)
    proc = run_cli("train", str(recipe), "--nproc", "2", "--overwrite", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / "ddp"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert len(list((run_dir / "tb").iterdir())) == 1
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "config.toml", "latest.pt",
                                                         "metrics.jsonl", "tb"]



@pytest.mark.parametrize("settings", [dict(momentum=None), dict(affine=False),
                                      dict(track_running_stats=False)])
def test_the_gloo_sync_batchnorm_is_torchs_batchnorm_in_one_process(tmp_path, settings):
    """One process: the global batch is the local one, so every batch norm setting must give
    nn.BatchNorm2d's outputs and running statistics (momentum None: a cumulative average)."""
    import torch.distributed as dist

    from spikeguide.training.distributed import CPUSyncBatchNorm

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        torch.manual_seed(0)
        ref = torch.nn.BatchNorm2d(3, **settings).double().train()
        sync = CPUSyncBatchNorm(3, **settings).double().train()
        sync.load_state_dict(ref.state_dict())
        for _ in range(3):
            x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1
            assert torch.allclose(sync(x), ref(x), atol=1e-10)
        for a, b in zip(sync.buffers(), ref.buffers()):
            assert torch.allclose(a.double(), b.double(), atol=1e-12)
    finally:
        dist.destroy_process_group()

class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Exploit()}, path)
    proc = run_cli("eval", str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("spikeguide: error: refusing to load")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_hybrid_with_teacher_and_mapping_modules_trains_under_two_processes(tmp_path):
    teacher = parse_config(tiny_config(tmp_path, name="ann", method={"name": "ann"},
                                       train={"epochs": 1}))
    train(teacher)
    recipe = write_recipe(tmp_path / "r.toml", tiny_config(
        tmp_path, name="hybrid", method={"name": "hybrid"}, train={"epochs": 1},
        teacher={"checkpoint": str(teacher.run_dir)}))
    proc = run_cli("train", str(recipe), "--nproc", "2", "--max-steps", "2", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    state = load_checkpoint(tmp_path / "runs" / "hybrid" / "latest.pt")
    mappings = {k: v for k, v in state["method"].items()
                if k.startswith("mappings.") and k.endswith(".0.weight")}  # the 1x1 convolutions
    assert mappings, "the mapping modules are saved with the run"
    for weight in mappings.values():  # initialized as identity 1x1 convolutions, then trained
        assert not torch.equal(weight[:, :, 0, 0], torch.eye(weight.shape[0]))


# rank 0 writes checkpoints slowly: a process that read the teacher's run before rank 0 finished
# writing it would find no checkpoint (or an older one)
SLOW_RANK0_SAVE = """
import os
if os.environ.get("RANK") == "0":
    import time
    import torch
    real_save = torch.save
    def slow_save(*args, **kwargs):
        time.sleep(1.0)
        return real_save(*args, **kwargs)
    torch.save = slow_save
"""


def test_teacher_recipe_trained_first_under_two_processes(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_RANK0_SAVE)
    teacher_recipe = write_recipe(tmp_path / "ann.toml", tiny_config(
        tmp_path, name="ann", method={"name": "ann"}, train={"epochs": 1}))
    recipe = write_recipe(tmp_path / "r.toml", tiny_config(
        tmp_path, name="kd", method={"name": "kd"}, train={"epochs": 1},
        teacher={"recipe": str(teacher_recipe)}))
    env = {**ONE_THREAD, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), SRC])}
    proc = run_cli("train", str(recipe), "--nproc", "2", "--max-steps", "2", env=env)
    assert proc.returncode == 0, proc.stderr
    teacher = load_checkpoint(tmp_path / "runs" / "ann" / "latest.pt")
    assert teacher["epoch"] == 1  # trained once, by both processes together
    assert load_checkpoint(tmp_path / "runs" / "kd" / "latest.pt")["global_step"] == 2


@pytest.mark.parametrize("jobs", [1, 2])
def test_sigterm_stops_an_ablation_and_the_same_command_resumes_it(tmp_path, jobs):
    teacher = write_recipe(tmp_path / "ann.toml", tiny_config(
        tmp_path, name="ann", method={"name": "ann"}, train={"epochs": 1}))
    recipe = write_recipe(tmp_path / "enof.toml", tiny_config(
        tmp_path, name="enof", method={"name": "enof"},
        train={"epochs": 3, "checkpoint_every": 2}, teacher={"recipe": str(teacher)}))
    out = tmp_path / "abl"
    variants = ["baseline", "laf", "repact"]
    command = ("ablate", str(recipe), "--T", "1", "--variants", *variants, "--out", str(out),
               "--jobs", str(jobs))
    proc = start_cli(*command)
    while proc.poll() is None and not (out / "baseline_T1_s0" / "latest.pt").exists():
        time.sleep(0.05)  # the first cell is training
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped on signal 15" in err and "run the same command again" in err
    assert load_checkpoint(out / "baseline_T1_s0" / "latest.pt")["epoch"] < 3
    assert not (out / f"{variants[jobs]}_T1_s0").exists()  # no cell started after the stop
    done = run_cli(*command, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    for v in variants:
        assert load_checkpoint(out / f"{v}_T1_s0" / "latest.pt")["epoch"] == 3


# ---------------------------------------------------------------- restarts, resume or start

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One epoch of the tiny run, checkpointed every 3 steps: the reference of the fallbacks."""
    cfg = parse_config(tiny_config(tmp_path_factory.mktemp("ref"), name="ref",
                                   train={"epochs": 1, "checkpoint_every": 3}))
    train(cfg)
    return load_checkpoint(cfg.run_dir / "latest.pt")["model"]


BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")


def test_a_killed_rank_restarts_the_group_from_its_checkpoint_bit_identically(tmp_path):
    settings = dict(train={"epochs": 1, "checkpoint_every": 2})
    command = ["--nproc", "2", "--max-steps", "6"]
    reference = write_recipe(tmp_path / "ref.toml", tiny_config(tmp_path, name="ref", **settings))
    assert run_cli("train", str(reference), *command, env=ONE_THREAD).returncode == 0
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import fault_injection\n"
                                                         "fault_injection.inject()\n")
    # rank 1 of the first group SIGKILLs itself before global step 5; the restarted group trains
    env = {**ONE_THREAD, "FAULT_KILL_RANK": "1:5",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), BENCHMARKS, SRC])}
    recipe = write_recipe(tmp_path / "r.toml", tiny_config(tmp_path, name="killed", **settings))
    # --overwrite is the first command's: the restarted group must resume, not start over
    proc = run_cli("-v", "train", str(recipe), *command, "--overwrite", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "worker group restart 1 of at most 3: continuing from the last checkpoint" in proc.stderr
    # resumed at the checkpoint of step 4 (starting over would end with the same weights)
    assert f"resumed {tmp_path / 'runs' / 'killed'} at epoch 1 step 4" in proc.stderr
    assert "exitcode: -9" in proc.stderr  # rank 1 did die
    killed = load_checkpoint(tmp_path / "runs" / "killed" / "latest.pt")
    assert killed["global_step"] == 6
    assert state_equal(killed["model"],
                       load_checkpoint(tmp_path / "runs" / "ref" / "latest.pt")["model"])


def test_resume_auto_starts_a_new_run_then_resumes_it(tmp_path, uninterrupted):
    from spikeguide.cli import build_parser

    parse = lambda *a: build_parser().parse_args(["train", "r.toml", *a]).resume
    assert (parse(), parse("--resume"), parse("--resume", "auto")) == (False, True, "auto")
    with pytest.raises(SystemExit):
        parse("--resume", "yes")
    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1, "checkpoint_every": 3}))
    assert train(cfg, resume="auto", max_steps=5).stopped.step == 5  # nothing there: starts
    assert train(cfg, resume="auto").stopped is None  # the same call again: resumes
    assert state_equal(load_checkpoint(cfg.run_dir / "latest.pt")["model"], uninterrupted)


# ---------------------------------------------------------------- checkpoint fallback


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_bytes_mid_file(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(255 - b for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_bytes_mid_file, lambda p: p.unlink()])
def test_unreadable_latest_falls_back_to_previous_with_one_warning(tmp_path, uninterrupted,
                                                                   damage, caplog):
    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1, "checkpoint_every": 3}))
    train(cfg, max_steps=7)  # latest.pt at step 7, previous.pt at step 6
    latest, previous = cfg.run_dir / "latest.pt", cfg.run_dir / "previous.pt"
    assert load_checkpoint(previous)["global_step"] == 6
    damage(latest)
    caplog.clear()
    train(cfg, resume=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"cannot read checkpoint {str(latest)!r}" in warnings[0]
    assert f"resuming from the previous checkpoint {str(previous)!r}" in warnings[0]
    assert state_equal(load_checkpoint(latest)["model"], uninterrupted)
    assert load_checkpoint(previous)["global_step"] < 22  # the bad file was not rotated into it


def test_unreadable_latest_without_previous_is_a_one_line_error(tmp_path):
    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1}))
    train(cfg, max_steps=1)
    assert not (cfg.run_dir / "previous.pt").exists()
    truncate(cfg.run_dir / "latest.pt")
    with pytest.raises(SpikeguideError, match=r"^cannot read checkpoint .*latest\.pt': [^\n]*$"):
        train(cfg, resume="auto")


def test_full_disk_while_saving_is_one_line_and_keeps_the_checkpoints(tmp_path, uninterrupted,
                                                                      monkeypatch):
    import spikeguide.training.checkpoint as ck

    monkeypatch.syspath_prepend(BENCHMARKS)
    from fault_injection import FillsUp

    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1, "checkpoint_every": 3}))
    train(cfg, max_steps=6)
    before = {p.name: p.read_bytes() for p in cfg.run_dir.glob("*.pt")}
    assert sorted(before) == ["latest.pt", "previous.pt"]
    real_save = torch.save
    monkeypatch.setattr(ck.torch, "save", lambda obj, f: real_save(obj, FillsUp(f, 4096)))
    with pytest.raises(SpikeguideError) as stop:
        train(cfg, resume=True)
    assert re.fullmatch(r"cannot write checkpoint '.*latest\.pt' \(No space left on device\); the "
                        r"checkpoints already in that folder are unchanged: make room, then "
                        r"resume with --resume auto", str(stop.value))
    assert {p.name: p.read_bytes() for p in cfg.run_dir.glob("*.pt")} == before
    assert not list(cfg.run_dir.glob(".*.tmp"))
    monkeypatch.setattr(ck.torch, "save", real_save)  # room made
    train(cfg, resume="auto")
    assert state_equal(load_checkpoint(cfg.run_dir / "latest.pt")["model"], uninterrupted)


def test_each_rename_is_followed_by_a_folder_fsync(tmp_path, monkeypatch):
    import spikeguide.training.checkpoint as ck

    calls = []
    real_replace = os.replace
    monkeypatch.setattr(ck.os, "replace",
                        lambda a, b: (calls.append(("rename", Path(b).name)), real_replace(a, b)))
    monkeypatch.setattr(ck, "fsync_dir", lambda folder: calls.append(("fsync", folder)))
    for step in (1, 2):
        ck.save_checkpoint({"model": {}, "step": step}, tmp_path / "latest.pt",
                           previous=tmp_path / "previous.pt")
    assert calls == [("rename", "latest.pt"), ("fsync", tmp_path),
                     ("rename", "previous.pt"), ("fsync", tmp_path),
                     ("rename", "latest.pt"), ("fsync", tmp_path)]
    assert [load_checkpoint(tmp_path / f"{n}.pt")["step"] for n in ("previous", "latest")] == [1, 2]


# ---------------------------------------------------------------- non-finite losses

def poison_losses(monkeypatch, calls):
    """The bptt method's loss becomes NaN at the given training forward calls (1-based)."""
    from spikeguide.methods import METHODS

    cls = METHODS.get("bptt")
    real_forward, count = cls.forward, iter(range(1, 10**6))

    def forward(self, x, y):
        loss, logits = real_forward(self, x, y)
        return (loss * float("nan") if next(count) in calls else loss), logits

    monkeypatch.setattr(cls, "forward", forward)


def events(run_dir):
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in ln.items() if k != "event"} for ln in lines if "event" in ln]


def nan_config(tmp_path, **train):
    return parse_config(tiny_config(tmp_path, data={"train_subset": 640},
                                    train={"epochs": 1, "checkpoint_every": 3, **train}))


def test_on_nonfinite_stop_keeps_the_checkpoint_and_records_the_stop(tmp_path, monkeypatch):
    cfg = nan_config(tmp_path)
    poison_losses(monkeypatch, {5})
    with pytest.raises(SpikeguideError, match=r"^the loss became nan at epoch 1 step 4; training "
                                              r"stopped and the last good checkpoint"):
        train(cfg)
    assert load_checkpoint(cfg.run_dir / "latest.pt")["global_step"] == 3
    assert events(cfg.run_dir) == [{"action": "stop", "epoch": 1, "step": 4, "global_step": 6,
                                     "loss": "nan"}]  # the read at step 6 found it


def test_on_nonfinite_skip_drops_and_counts_the_step(tmp_path, monkeypatch, caplog):
    cfg = nan_config(tmp_path, on_nonfinite="skip")
    poison_losses(monkeypatch, {5, 7})
    summary = train(cfg)
    assert summary.stopped is None and math.isfinite(summary.last.train_loss)
    state = load_checkpoint(cfg.run_dir / "latest.pt")
    assert state["nonfinite"] == {"skipped": 2, "rollbacks": 0} and state["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert [(e["action"], e["step"], e["skipped"]) for e in events(cfg.run_dir)] == \
        [("skip", 4, 1), ("skip", 6, 2)]
    assert sum("on_nonfinite = skip" in r.getMessage() for r in caplog.records) == 2


def test_on_nonfinite_rollback_returns_to_the_checkpoint_with_a_smaller_lr(tmp_path, monkeypatch):
    cfg = nan_config(tmp_path, on_nonfinite="rollback", rollback_lr_factor=0.25)
    poison_losses(monkeypatch, {5})
    assert train(cfg).stopped is None
    state = load_checkpoint(cfg.run_dir / "latest.pt")
    assert state["nonfinite"] == {"skipped": 0, "rollbacks": 1} and state["global_step"] == 10
    assert state["scheduler"]["base_lrs"] == [0.05 * 0.25]
    (event,) = events(cfg.run_dir)
    assert (event["action"], event["step"], event["global_step"], event["resumed_step"],
            event["lr_factor"]) == ("rollback", 4, 6, 3, 0.25)


def test_on_nonfinite_rollback_stops_after_max_rollbacks(tmp_path, monkeypatch):
    cfg = nan_config(tmp_path, on_nonfinite="rollback", max_rollbacks=2)
    poison_losses(monkeypatch, set(range(5, 100)))
    # after a rollback to step 3, the first step trained again is NaN too
    with pytest.raises(SpikeguideError, match=r"at epoch 1 step 3 after 2 rollbacks "
                                              r"\(train.max_rollbacks\); training stopped"):
        train(cfg)
    assert [e["action"] for e in events(cfg.run_dir)] == ["rollback", "rollback", "stop"]
    assert load_checkpoint(cfg.run_dir / "latest.pt")["global_step"] == 3


# ---------------------------------------------------------------- the fault benchmark

def test_fault_benchmark_quick_subset_survives_every_fault(tmp_path):
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"
    done = subprocess.run([sys.executable, str(bench), "--quick", "--work", str(tmp_path)],
                          env={**os.environ, "PYTHONPATH": SRC, **ONE_THREAD},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "faults survived: 2 / 2" in done.stdout
    assert "| corrupted latest.pt |" in done.stdout and "nothing (bit-identical) | yes |" in done.stdout
    assert "| checkpoint of another model |" in done.stdout
