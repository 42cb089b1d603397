import csv
import json

import pytest

import spikeguide.runner
from conftest import run_cli, state_equal, tiny_config, write_recipe
from spikeguide.ablate import VARIANTS, base_config, cell_config, run_ablation
from spikeguide.checkpoint import load_checkpoint
from spikeguide.config import dump_toml, load_config
from spikeguide.errors import SpikeguideError

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
    cells = {k: cell_config(raw, base, v, 4, tmp_path / "out", "T_DIR") for k, v in VARIANTS.items()}
    assert {k: (c.method.name, getattr(c.method.options, "laf", None), c.model.repact)
            for k, c in cells.items()} == {
        "baseline": ("enof", False, False), "laf": ("enof", True, False),
        "repact": ("enof", False, True), "laf_repact": ("enof", True, True),
        "kd": ("kd", None, False)}
    kd = cells["kd"].method.options
    assert (kd.tau, kd.alpha) == (2.0, 0.5)  # the KD row distills at LAF's temperature and weight
    for c in cells.values():
        assert c.model.T == 4 and c.teacher.checkpoint == "T_DIR" and c.teacher.recipe is None
        assert c.teacher.init_student and c.data.test_subset == 100


def test_ablate_writes_tables_and_a_rerun_skips_finished_cells(recipe, tmp_path, monkeypatch):
    out = tmp_path / "abl"
    # an interrupted cell is resumed, not restarted
    raw, base = base_config(recipe, [])
    interrupted = cell_config(raw, base, VARIANTS["laf"], 1, out, str(tmp_path / "runs" / "ann"))
    spikeguide.runner.train(load_config(tmp_path / "ann.toml"))
    spikeguide.runner.train(interrupted, max_steps=1)

    calls, real_train = {}, spikeguide.runner.train

    def recording_train(cfg, **kwargs):
        calls[cfg.name] = kwargs.get("resume", False)
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(spikeguide.runner, "train", recording_train)
    run_ablation(recipe, [1, 2], out=out, echo=lambda s: None)
    assert calls == {f"{k}_T{T}": k == "laf" and T == 1 for k in VARIANTS for T in (1, 2)}
    assert load_checkpoint(interrupted.run_dir / "latest.pt")["epoch"] == 1
    teachers = {json.loads((out / f"{k}_T{T}" / "teacher.json").read_text())["checkpoint"]
                for k in VARIANTS for T in (1, 2)}
    assert teachers == {str(tmp_path / "runs" / "ann")}  # one shared teacher
    rows = list(csv.reader(open(out / "ablation.csv")))
    assert rows[0][:5] == ["variant", "T1_best_top1", "T1_final_top1", "T1_firing_rate",
                           "T1_wall_s"]
    assert [r[0] for r in rows[1:]] == [v.label for v in VARIANTS.values()]
    assert all(cell != "" for r in rows[1:] for cell in r)
    table = (out / "ablation.md").read_text()
    assert "| +LAF+RepAct |" in table and "| T=1 | T=2 |" in table and "not run" not in table
    before = {p: p.stat().st_mtime_ns for p in out.rglob("latest.pt")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(spikeguide.runner, "train", no_training)
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
    from spikeguide.teacher import check_same_config

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
    keep = [i for i, name in enumerate(rows[0]) if not name.endswith("_wall_s")]
    return [[r[i] for i in keep] for r in rows]


def test_cells_in_two_processes_are_the_runs_of_one(recipe, tmp_path):
    run_ablation(recipe, [1], out=tmp_path / "one", echo=lambda s: None)
    lines = []
    run_ablation(recipe, [1], out=tmp_path / "two", jobs=2, echo=lines.append)
    assert lines[0].startswith("5 cells in 2 processes of 1 thread(s) each")
    assert sum("done in" in ln for ln in lines) == 5
    assert cell_results(tmp_path / "two") == cell_results(tmp_path / "one")
    for v in VARIANTS:
        assert state_equal(load_checkpoint(tmp_path / "one" / f"{v}_T1" / "latest.pt")["model"],
                           load_checkpoint(tmp_path / "two" / f"{v}_T1" / "latest.pt")["model"])
    with pytest.raises(SpikeguideError, match="jobs must be at least 1"):
        run_ablation(recipe, [1], out=tmp_path / "two", jobs=0)
