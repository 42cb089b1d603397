import csv
import json

import pytest

import spikeguide.training.run
import spikeguide.training.teacher
from conftest import run_cli, state_equal, tiny_config, write_recipe
from spikeguide.commands.ablate import (
    VARIANTS,
    base_config,
    cell_config,
    comparison,
    run_ablation,
    summary_cell,
)
from spikeguide.config import dump_toml, load_config
from spikeguide.errors import SpikeguideError
from spikeguide.training.checkpoint import load_checkpoint

ONE_EPOCH = {"epochs": 1, "progress": False}


@pytest.fixture
def recipe(tmp_path):
    small = {"train_subset": 256, "test_subset": 100}  # 4 steps and 1 test batch a cell
    teacher = write_recipe(tmp_path / "ann.toml", tiny_config(
        tmp_path, name="ann", method={"name": "ann"}, train=ONE_EPOCH, data=small))
    return write_recipe(tmp_path / "enof.toml", tiny_config(
        tmp_path, name="enof", train=ONE_EPOCH, data=small,
        method={"name": "enof", "laf_tau": 2.0, "laf_lambda": 0.5},
        teacher={"recipe": str(teacher), "init_student": True}))


def test_cells_are_the_variants_of_one_recipe(recipe, tmp_path):
    raw, base = base_config(recipe, [])
    cells = {k: cell_config(raw, base, v, 4, 7, tmp_path / "out", "T_DIR")
             for k, v in VARIANTS.items()}
    assert {k: (c.method.name, getattr(c.method.options, "laf", None), c.model.repact)
            for k, c in cells.items()} == {
        "baseline": ("enof", False, False), "laf": ("enof", True, False),
        "repact": ("enof", False, True), "laf_repact": ("enof", True, True),
        "kd": ("kd", None, False)}
    kd = cells["kd"].method.options
    assert (kd.tau, kd.alpha) == (2.0, 0.5)  # the KD row distills at LAF's temperature and weight
    for key, c in cells.items():
        assert c.name == f"{key}_T4_s7" and c.train.seed == 7
        assert c.model.T == 4 and c.teacher.checkpoint == "T_DIR" and c.teacher.recipe is None
        assert c.teacher.init_student and c.data.test_subset == 100


def test_ablate_writes_tables_and_a_rerun_skips_finished_cells(recipe, tmp_path, monkeypatch):
    out = tmp_path / "abl"
    # an interrupted cell is resumed, not restarted
    raw, base = base_config(recipe, [])
    interrupted = cell_config(raw, base, VARIANTS["laf"], 1, 0, out,
                              str(tmp_path / "runs" / "ann"))
    spikeguide.training.run.train(load_config(tmp_path / "ann.toml"))
    spikeguide.training.run.train(interrupted, max_steps=1)

    calls, real_train = {}, spikeguide.training.run.train
    evaluations, real_evaluate = [], spikeguide.training.teacher.score_model

    def recording_train(cfg, **kwargs):
        calls[cfg.name] = kwargs.get("resume", False)
        return real_train(cfg, **kwargs)

    def counting_evaluate(*args, **kwargs):
        evaluations.append(1)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(spikeguide.training.run, "train", recording_train)
    monkeypatch.setattr(spikeguide.training.teacher, "score_model", counting_evaluate)
    run_ablation(recipe, [1, 2], out=out, echo=lambda s: None)
    assert calls == {f"{k}_T{T}_s0": k == "laf" and T == 1 for k in VARIANTS for T in (1, 2)}
    assert len(evaluations) == 1  # the teacher is evaluated once, not once per cell
    assert load_checkpoint(interrupted.run_dir / "latest.pt")["epoch"] == 1
    records = {(out / f"{k}_T{T}_s0" / "teacher.json").read_text() for k in VARIANTS
               for T in (1, 2) if (k, T) != ("laf", 1)}
    assert len(records) == 1  # one shared teacher, one record
    assert json.loads(records.pop())["checkpoint"] == str(tmp_path / "runs" / "ann")
    rows = list(csv.reader(open(out / "ablation.csv")))
    assert rows[0] == ["variant", "T", "seed", "best_top1", "final_top1", "firing_rate", "wall_s"]
    assert [r[:3] for r in rows[1:]] == [[v.label, str(T), "0"] for v in VARIANTS.values()
                                         for T in (1, 2)]
    assert all(cell != "" for r in rows[1:] for cell in r)
    table = (out / "ablation.md").read_text()
    assert "| +LAF+RepAct |" in table and "| T=1 | T=2 |" in table and "not run" not in table
    assert "| +LAF vs vanilla KD |" in table and "one seed: spread unknown" in table
    before = {p: p.stat().st_mtime_ns for p in out.rglob("latest.pt")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(spikeguide.training.run, "train", no_training)
    again = []
    run_ablation(recipe, [1, 2], out=out, echo=again.append)
    assert sum("finished before, skipped" in ln for ln in again) == 10
    assert {p: p.stat().st_mtime_ns for p in out.rglob("latest.pt")} == before
    assert (out / "ablation.md").read_text() == table


def test_a_cell_of_another_config_is_never_reused(recipe, tmp_path):
    out = tmp_path / "abl"
    run_ablation(recipe, [1], variants=["baseline"], out=out, echo=lambda s: None)
    with pytest.raises(SpikeguideError, match="holds a run of another config.*optim.lr"):
        run_ablation(recipe, [1], variants=["baseline"], out=out, overrides=["optim.lr=0.01"],
                     echo=lambda s: None)


def test_a_run_from_before_a_config_field_existed_is_the_same_config(tmp_path):
    from spikeguide.training.run import check_same_config

    cfg = load_config(write_recipe(tmp_path / "r.toml", tiny_config(tmp_path)))
    cfg.run_dir.mkdir(parents=True)
    old = "\n".join(ln for ln in dump_toml(cfg).splitlines() if not ln.startswith("backend"))
    assert "backend" in dump_toml(cfg) and "backend" not in old
    (cfg.run_dir / "config.toml").write_text(old)
    check_same_config(cfg)  # the missing field has its default value: no error
    cfg.neuron.backend = "torch"
    with pytest.raises(SpikeguideError, match="another config.*neuron.backend"):
        check_same_config(cfg)


def test_ablate_refuses_other_methods_and_unknown_variants(tmp_path, recipe):
    bptt = write_recipe(tmp_path / "bptt.toml", tiny_config(tmp_path, method={"name": "bptt"}))
    with pytest.raises(SpikeguideError, match="ablate takes an 'enof' recipe"):
        run_ablation(bptt, [1])
    with pytest.raises(SpikeguideError, match="unknown ablation variant"):
        run_ablation(recipe, [1], variants=["laf", "magic"])


def test_ablate_command_line(recipe, tmp_path):
    result = run_cli("ablate", str(recipe), "--T", "1", "--variants", "kd",
                     "--out", str(tmp_path / "abl"))
    assert result.returncode == 0, result.stderr
    assert "| vanilla KD |" in result.stdout and "ablation.csv" in result.stdout


def cell_results(out):
    """Every cell's accuracies and firing rate from ablation.csv (wall times differ by run)."""
    with open(out / "ablation.csv") as f:
        rows = list(csv.reader(f))
    return sorted(r[:-1] for r in rows)


def test_cells_in_two_processes_are_the_runs_of_one(recipe, tmp_path):
    run_ablation(recipe, [1], out=tmp_path / "one", echo=lambda s: None)
    lines = []
    run_ablation(recipe, [1], out=tmp_path / "two", jobs=2, echo=lines.append)
    assert lines[0].startswith("5 cells in 2 processes of 1 thread(s) each")
    assert sum("done in" in ln for ln in lines) == 5
    assert cell_results(tmp_path / "two") == cell_results(tmp_path / "one")
    for v in VARIANTS:
        assert state_equal(load_checkpoint(tmp_path / "one" / f"{v}_T1_s0" / "latest.pt")["model"],
                           load_checkpoint(tmp_path / "two" / f"{v}_T1_s0" / "latest.pt")["model"])
    with pytest.raises(SpikeguideError, match="jobs must be at least 1"):
        run_ablation(recipe, [1], out=tmp_path / "two", jobs=0)


def test_seeds_give_mean_and_spread_and_mark_differences_within_it(recipe, tmp_path):
    out = run_ablation(recipe, [1], variants=["baseline", "laf"], seeds=[0, 1],
                       out=tmp_path / "abl", echo=lambda s: None)
    rows = list(csv.reader(open(out / "ablation.csv")))[1:]
    assert sorted((r[0], r[2]) for r in rows) == [("+LAF", "0"), ("+LAF", "1"),
                                                  ("baseline", "0"), ("baseline", "1")]
    finals = {(r[0], r[2]): float(r[4]) for r in rows}
    a, b = [finals["baseline", s] for s in "01"], [finals["+LAF", s] for s in "01"]
    table = (out / "ablation.md").read_text()
    assert f"| baseline | {summary_cell(a)} |" in table
    assert f"| +LAF vs baseline | {comparison(b, a)} |" in table
    first = load_checkpoint(out / "baseline_T1_s0" / "latest.pt")["model"]
    assert not state_equal(first, load_checkpoint(out / "baseline_T1_s1" / "latest.pt")["model"])


def test_a_difference_smaller_than_the_spread_is_not_established():
    assert summary_cell([60.0, 62.0]) == "61.00 +- 1.41 [60.00, 62.00]"
    assert summary_cell([60.0]) == "60.00"
    # means 61 and 62, standard deviations 1.41 and 0: 1.00 < 1.41
    assert comparison([62.0, 62.0], [60.0, 62.0]) == "+1.00 (not established: spread 1.41)"
    assert comparison([65.0, 64.0], [60.0, 62.0]) == "+3.50"  # 3.50 > 1.41 + 0.71
    assert comparison([65.0], [60.0, 62.0]) == "+4.00 (one seed: spread unknown)"
