"""Killed, signalled and distributed runs, as separate processes."""

import os
import random
import signal
import subprocess
import sys
import time

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
