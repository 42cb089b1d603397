"""Bit-identical resume after SIGKILL for the methods with a teacher or state of their own."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import ONE_THREAD, SRC, state_equal, tiny_config, write_recipe
from spikeguide.config import parse_config
from spikeguide.training.checkpoint import load_checkpoint
from spikeguide.training.run import train

# the CLI, killed right after its second checkpoint (the in-epoch one at step 6) is written
KILL_AFTER_SECOND_SAVE = """
import os, signal, sys
from spikeguide.training.trainer import Trainer
real_save = Trainer.save
saves = 0
def save_then_die(self, *args, **kwargs):
    global saves
    path = real_save(self, *args, **kwargs)
    saves += 1
    if saves == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return path
Trainer.save = save_then_die
from spikeguide.cli import main
sys.exit(main(sys.argv[1:]))
"""

METHODS = {
    "enof": {"name": "enof", "laf": True},
    "ratebp": {"name": "ratebp", "alpha": 1.0, "laf": True},
    "hybrid": {"name": "hybrid", "cuts": [1, 2], "laf": True},
}
STEPS = 8


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("teacher")
    cfg = parse_config(tiny_config(tmp_path, name="ann", method={"name": "ann"}))
    train(cfg, max_steps=3)
    return cfg.run_dir


@pytest.mark.parametrize("method", sorted(METHODS))
def test_sigkill_then_resume_is_bit_identical(tmp_path, teacher_run, method):
    settings = dict(method=METHODS[method], teacher={"checkpoint": str(teacher_run)},
                    train={"epochs": 1, "checkpoint_every": 3})
    reference = parse_config(tiny_config(tmp_path, name="ref", **settings))
    train(reference, max_steps=STEPS)
    recipe = write_recipe(tmp_path / "r.toml", tiny_config(tmp_path, name="killed", **settings))
    env = {**os.environ, "PYTHONPATH": SRC, **ONE_THREAD}
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_SECOND_SAVE, "train", str(recipe)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = tmp_path / "runs" / "killed"
    assert load_checkpoint(run_dir / "latest.pt")["global_step"] == 6
    train(parse_config(tiny_config(tmp_path, name="killed", **settings)), resume=True,
          max_steps=STEPS)  # in this process: one start-up less
    got, expected = load_checkpoint(run_dir / "latest.pt"), load_checkpoint(
        reference.run_dir / "latest.pt")
    assert got["global_step"] == expected["global_step"] == STEPS
    assert state_equal(got["model"], expected["model"])
    assert state_equal(got["method"], expected["method"])  # hybrid's mapping modules
    if method == "hybrid":
        assert got["method"]
