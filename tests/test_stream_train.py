"""Training on the streaming loader: the loader choice, exact resume after SIGKILL, two processes
against one, and stopping on signals; on a generated miniature ImageNet tree."""

import json
import os
import signal
import time

import pytest
import torch

from conftest import (
    ONE_THREAD,
    assert_two_processes_match_one,
    run_cli,
    start_cli,
    state_equal,
    tiny_config,
    write_recipe,
)
from mini_imagenet import make_tree
from spikeguide.config import parse_config
from spikeguide.data import choice as choice_module
from spikeguide.data import choose_loader, open_dataset
from spikeguide.errors import SpikeguideError
from spikeguide.training.build import build_datasets
from spikeguide.training.checkpoint import load_checkpoint
from spikeguide.training.run import train

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGUIDE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("imagenet"), per_class=16)


def stream_config(tmp_path, root, workers=2, **sections) -> dict:
    """The tiny digits run, on the tree at 8x8 with ImageNet's augmentation (which only the
    streaming loader can apply, so "auto" streams)."""
    data = {"name": "imagefolder", "root": str(root), "batch_size": 4, "loader": "auto",
            "options": {"resize": 10, "crop": 8, "workers": workers},
            "augment": {"random_resized_crop": True, "flip": True}}
    return tiny_config(tmp_path, data={**data, **sections.pop("data", {})}, **sections)


# ---------------------------------------------------------------------------- the choice


def test_auto_keeps_memory_while_the_splits_fit(tree, monkeypatch):
    splits = [open_dataset("imagefolder", tree, s, resize=10, crop=8) for s in ("train", "val")]
    need = (48 + 6) * 3 * 8 * 8
    options = dict(random_crop=False, device=CPU, ram_share=0.5, gpu_share=0.25)
    monkeypatch.setattr(choice_module, "ram_bytes", lambda: 2 * need)
    fits = choose_loader("auto", splits, **options)
    assert fits.kind == "memory"
    assert fits.reason == ("the decoded splits take 10 kB, within data.ram_share = 0.5 of the "
                           "21 kB of RAM")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two copies no longer fit in half the RAM
    assert choose_loader("auto", splits, **options).kind == "stream"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert choose_loader("auto", splits, **{**options, "ram_share": 0.49}).kind == "stream"
    # on a GPU the in-memory loader holds the splits there too
    monkeypatch.setattr(choice_module, "gpu_bytes", lambda device: 4 * need)
    on_gpu = choose_loader("auto", splits, **{**options, "device": torch.device("cuda")})
    assert on_gpu.kind == "memory" and "data.gpu_share = 0.25" in on_gpu.reason
    small_gpu = choose_loader("auto", splits, **{**options, "device": torch.device("cuda"),
                                                 "gpu_share": 0.2})
    assert small_gpu.kind == "stream" and "more than data.gpu_share = 0.2" in small_gpu.reason


def test_random_crop_and_non_image_data_decide_the_loader(tree, tmp_path):
    splits = [open_dataset("imagefolder", tree, "train", resize=10, crop=8)]
    options = dict(device=CPU, ram_share=0.5, gpu_share=0.25)
    assert choose_loader("auto", splits, random_crop=True, **options).kind == "stream"
    with pytest.raises(SpikeguideError, match="in-memory loader does not keep"):
        choose_loader("memory", splits, random_crop=True, **options)
    assert choose_loader("stream", splits, random_crop=False, **options).reason == \
        "data.loader = 'stream'"
    digits = [open_dataset("digits", None, "train", size=8)]
    assert choose_loader("auto", digits, random_crop=False, **options).reason == \
        "digits is read whole into memory (no streaming form)"
    with pytest.raises(SpikeguideError, match="digits has no streaming form"):
        choose_loader("stream", digits, random_crop=False, **options)


def test_auto_streams_with_random_crop_and_keeps_memory_without(tree, tmp_path):
    streamed = parse_config(stream_config(tmp_path, tree))
    train_set, test_set = build_datasets(streamed, CPU)
    assert train_set.info["loader"] == test_set.info["loader"] == "stream"
    assert "random_resized_crop" in train_set.info["loader_reason"]
    memory = parse_config(stream_config(tmp_path, tree, data={"augment": {"flip": True}}))
    assert build_datasets(memory, CPU)[0].info["loader"] == "memory"


# ---------------------------------------------------------------------------- exact resume


def wait_for_checkpoint(proc, path):
    while proc.poll() is None and not path.exists():
        time.sleep(0.02)


def test_sigkill_mid_epoch_then_resume_is_bit_identical_whatever_the_workers(tree, tmp_path):
    settings = dict(train={"epochs": 2, "checkpoint_every": 3})
    reference = parse_config(stream_config(tmp_path, tree, workers=0, name="ref", **settings))
    train(reference)
    # the run's config records the loader and why
    header = (reference.run_dir / "config.toml").read_text().splitlines()[1]
    info = json.loads(header.removeprefix("#   train: "))
    assert info["loader"] == "stream" and "random_resized_crop" in info["loader_reason"]
    recipe = write_recipe(tmp_path / "r.toml",
                          stream_config(tmp_path, tree, workers=2, name="killed", **settings))
    latest = tmp_path / "runs" / "killed" / "latest.pt"
    proc = start_cli("train", str(recipe))
    wait_for_checkpoint(proc, latest)
    assert proc.poll() is None, proc.communicate()[1]
    proc.kill()
    proc.wait()
    assert 0 < load_checkpoint(latest)["global_step"] < 24  # killed mid-run
    done = run_cli("train", str(recipe), "--resume", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert state_equal(load_checkpoint(latest)["model"],
                       load_checkpoint(reference.run_dir / "latest.pt")["model"])


def test_two_gloo_processes_match_one_process(tree, tmp_path):
    # cutout: each process draws the device augmentation of its own rows of the global batch
    settings = dict(train={"epochs": 1, "sync_batchnorm": True}, data={"augment": {
        "random_resized_crop": True, "flip": True, "cutout": 3}})
    assert_two_processes_match_one(
        tmp_path, stream_config(tmp_path, tree, workers=2, name="single", **settings),
        stream_config(tmp_path, tree, workers=1, name="ddp", **settings), steps=3)


# ---------------------------------------------------------------------------- signals


def test_sigterm_to_the_whole_process_group_stops_workers_and_checkpoints(tree, tmp_path):
    # SIGTERM sent to every process of the job (as by a batch scheduler), the workers included
    recipe = write_recipe(tmp_path / "r.toml", stream_config(
        tmp_path, tree, train={"epochs": 50, "checkpoint_every": 2}))
    proc = start_cli("train", str(recipe), start_new_session=True)
    wait_for_checkpoint(proc, tmp_path / "runs" / "tiny" / "latest.pt")
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "resume with: spikeguide train" in out
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "latest.pt")["global_step"] > 0
