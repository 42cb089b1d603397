import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SRC = str(Path(__file__).resolve().parents[1] / "src")
# one thread in every process the tests start, too (training would otherwise choose its own)
os.environ["OMP_NUM_THREADS"] = "1"


def tiny_config(tmp_path, **sections) -> dict:
    """A run that trains in seconds: resnet20 at 1/16 width on 8x8 digits, T=2."""
    cfg = {
        "name": "tiny",
        "out_dir": str(tmp_path / "runs"),
        "model": {"name": "resnet20", "width": 0.0625, "T": 2},
        "data": {"name": "digits", "batch_size": 64, "options": {"size": 8},
                 "augment": {"crop_padding": 1, "flip": False}},
        "optim": {"lr": 0.05},
        "train": {"epochs": 2, "progress": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def write_recipe(path: Path, cfg: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(cfg))
    return path


def run_cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "spikeguide", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def start_cli(*args, **popen) -> subprocess.Popen:
    """The CLI in a process of its own (one torch thread), its output captured."""
    env = {**os.environ, "PYTHONPATH": SRC, **ONE_THREAD}
    return subprocess.Popen([sys.executable, "-m", "spikeguide", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def assert_two_processes_match_one(tmp_path, single: dict, ddp: dict, steps: int) -> Path:
    """Train ``single`` here and ``ddp`` under 2 gloo processes for ``steps`` steps; their weights
    must agree (float rounding aside). Returns the recipe of the two-process run."""
    from spikeguide.config import parse_config
    from spikeguide.training.checkpoint import load_checkpoint
    from spikeguide.training.run import train

    train(parse_config(single), max_steps=steps)
    recipe = write_recipe(tmp_path / "r.toml", ddp)
    proc = run_cli("train", str(recipe), "--nproc", "2", "--max-steps", str(steps), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    a = load_checkpoint(Path(single["out_dir"]) / single["name"] / "latest.pt")["model"]
    b = load_checkpoint(Path(ddp["out_dir"]) / ddp["name"] / "latest.pt")["model"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    return recipe


@pytest.fixture(autouse=True)
def _single_thread():
    # bit-exact comparisons between processes need the same thread count everywhere
    torch.set_num_threads(1)
