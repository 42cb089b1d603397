"""data.val_split: a class-balanced, seeded hold-out of the training split, scored every epoch."""

import subprocess
import sys

import pytest
import torch

from conftest import SRC, state_equal, tiny_config
from spikeguide.config import parse_config
from spikeguide.data import ArrayDataset
from spikeguide.data.base import hold_out
from spikeguide.errors import SpikeguideError
from spikeguide.training.build import build_run_datasets
from spikeguide.training.checkpoint import load_checkpoint
from spikeguide.training.run import train
from spikeguide.training.runlog import read_metrics


def labelled(counts):
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    x = torch.arange(len(y), dtype=torch.uint8).view(-1, 1, 1, 1)  # each sample's own pixel
    return ArrayDataset(x, y, [str(k) for k in range(len(counts))])


def test_the_held_out_part_is_class_balanced_disjoint_and_seeded():
    ds = labelled([40, 40, 20])
    rest, held = hold_out(ds, 10, seed=0)
    assert torch.bincount(held.y).tolist() == [4, 4, 2]
    assert torch.bincount(rest.y).tolist() == [36, 36, 18]
    ids_rest, ids_held = set(rest.x.flatten().tolist()), set(held.x.flatten().tolist())
    assert not ids_rest & ids_held and len(ids_rest | ids_held) == len(ds)
    assert rest.x.flatten().tolist() == sorted(ids_rest)  # the original order is kept
    assert torch.equal(held.x, hold_out(ds, 10, seed=0)[1].x)
    assert not torch.equal(held.x, hold_out(ds, 10, seed=1)[1].x)
    assert held.info["val_split"] == {"n": 10, "seed": 0, "rule": "stratified"}
    for n in (100, 101):  # something must be left to train on
        with pytest.raises(SpikeguideError, match=rf"data.val_split must be in 1..99 .* got {n}$"):
            hold_out(ds, n, seed=0)


def held_out_digits(tmp_path, **data):
    cfg = parse_config(tiny_config(tmp_path, data={"val_split": 100, **data}))
    train_set, val_set, test_set = build_run_datasets(cfg)
    return train_set, val_set, test_set


def test_the_split_is_the_same_in_another_process_and_whatever_the_training_seed(tmp_path):
    train_set, val_set, test_set = held_out_digits(tmp_path)
    whole = build_run_datasets(parse_config(tiny_config(tmp_path)))[0]
    assert (len(train_set), len(val_set), len(test_set)) == (len(whole) - 100, 100, 359)
    assert torch.bincount(val_set.y).tolist() == [10] * 10
    code = ("import sys; sys.path.insert(0, 'tests'); from conftest import tiny_config;"
            "from spikeguide.config import parse_config;"
            "from spikeguide.training.build import build_run_datasets;"
            f"cfg = parse_config(tiny_config(__import__('pathlib').Path({str(tmp_path)!r}),"
            " data={'val_split': 100}));"
            "v = build_run_datasets(cfg)[1]; print(int(v.x.double().sum()), v.y.tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"},
                         cwd=SRC.rsplit("/", 1)[0], check=True).stdout.split(" ", 1)
    assert int(out[0]) == int(val_set.x.double().sum())
    assert out[1].strip() == str(val_set.y.tolist())
    # the training seed does not move the split; data.val_seed does
    other = parse_config(tiny_config(tmp_path, data={"val_split": 100}, train={"seed": 5}))
    assert torch.equal(build_run_datasets(other)[1].x, val_set.x)
    assert not torch.equal(held_out_digits(tmp_path, val_seed=1)[1].x, val_set.x)


def test_runs_score_validation_every_epoch_and_test_at_the_end(tmp_path):
    cfg = parse_config(tiny_config(tmp_path, data={"val_split": 100}, train={"epochs": 3}))
    summary = train(cfg)
    records = read_metrics(cfg.run_dir)
    assert all(r.val is not None for r in records)
    assert [r.test is not None for r in records] == [False, False, True]
    assert summary.best_top1 == max(r.val.top1 for r in records)  # best.pt chosen on validation
    assert load_checkpoint(cfg.run_dir / "best.pt")["best_top1"] == summary.best_top1
    every = parse_config(tiny_config(tmp_path, name="every", data={"val_split": 100},
                                     train={"epochs": 2, "test_every_epoch": True}))
    train(every)
    assert all(r.test is not None and r.val is not None for r in read_metrics(every.run_dir))


def test_a_resumed_run_holds_out_the_same_split_and_matches_the_uninterrupted_one(tmp_path):
    full = parse_config(tiny_config(tmp_path, name="full", data={"val_split": 100},
                                    train={"epochs": 1}))
    train(full)
    part = parse_config(tiny_config(tmp_path, name="part", data={"val_split": 100},
                                    train={"epochs": 1}))
    train(part, max_steps=5)
    train(part, resume=True)
    assert state_equal(load_checkpoint(full.run_dir / "latest.pt")["model"],
                       load_checkpoint(part.run_dir / "latest.pt")["model"])
    assert read_metrics(full.run_dir)[0].val == read_metrics(part.run_dir)[0].val
