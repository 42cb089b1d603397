import csv
import json

import pytest

import spikeguide.training.run
import spikeguide.training.teacher
from conftest import run_cli, state_equal, tiny_config, write_recipe
from spikeguide.commands.ablate import (
    VARIANTS,
    DistillSettings,
    base_config,
    cell_config,
    run_ablation,
    summary_cell,
)
from spikeguide.analysis.paired import paired_test
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
    # ... unless it is given settings of its own, which leave LAF's alone
    own = DistillSettings.of(base, kd_tau=3.0, kd_alpha=8.0)
    tuned = {k: cell_config(raw, base, v, 4, 7, tmp_path / "out", "T_DIR", own).method.options
             for k, v in VARIANTS.items()}
    assert (tuned["kd"].tau, tuned["kd"].alpha) == (3.0, 8.0)
    assert (tuned["laf"].laf_tau, tuned["laf"].laf_lambda) == (2.0, 0.5)
    assert own.describe() == "LAF tau 2, lambda 0.5; vanilla KD tau 3, weight 8"
    with pytest.raises(SpikeguideError, match="kd_tau=0, kd_alpha=8"):
        DistillSettings.of(base, kd_tau=0.0, kd_alpha=8.0)
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
    assert rows[0] == ["variant", "T", "seed", "best_top1", "final_top1", "final_val_top1",
                       "firing_rate", "wall_s"]
    assert [r[:3] for r in rows[1:]] == [[v.label, str(T), "0"] for v in VARIANTS.values()
                                         for T in (1, 2)]
    assert all(cell != "" for r in rows[1:] for cell in r)
    assert {r[5] for r in rows[1:]} == {"-"}  # no validation split
    table = (out / "ablation.md").read_text()
    assert "| +LAF+RepAct |" in table and "| T=1 | T=2 |" in table and "not run" not in table
    assert "| +LAF vs vanilla KD |" in table and "one seed: no test" in table
    assert "| +LAF+RepAct vs +LAF |" in table and "| +LAF+RepAct vs vanilla KD |" in table
    assert "choose no setting on them" in table  # no validation split: compared on test
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
    result = run_cli("ablate", str(recipe), "--T", "1", "--variants", "kd", "--kd-alpha", "3",
                     "--out", str(tmp_path / "abl"))
    assert result.returncode == 0, result.stderr
    assert "| vanilla KD |" in result.stdout and "ablation.csv" in result.stdout
    assert "vanilla KD tau 2, weight 3." in result.stdout
    trained = load_checkpoint(tmp_path / "abl" / "kd_T1_s0" / "latest.pt")["config"]["method"]
    assert (trained["tau"], trained["alpha"]) == (2.0, 3.0)


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
    assert f"| +LAF vs baseline | {paired_test(b, a).describe()} |" in table
    first = load_checkpoint(out / "baseline_T1_s0" / "latest.pt")["model"]
    assert not state_equal(first, load_checkpoint(out / "baseline_T1_s1" / "latest.pt")["model"])


def test_summary_cells():
    assert summary_cell([60.0, 62.0]) == "61.00 +- 1.41 [60.00, 62.00]"
    assert summary_cell([60.0]) == "60.00"


def test_the_paired_test_against_hand_computed_examples():
    # differences 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641 with 2 degrees of freedom,
    # whose two-sided p is 1 - t / sqrt(t^2 + 2) = 0.07418; t(0.975, 2) = 4.302653
    test = paired_test([61.0, 62.0, 63.0], [60.0, 60.0, 60.0])
    assert test.p == pytest.approx(1 - 12 ** 0.5 / 14 ** 0.5, rel=1e-9)
    assert test.ci == pytest.approx((2 - 4.302653 / 3 ** 0.5, 2 + 4.302653 / 3 ** 0.5), rel=1e-6)
    assert not test.established  # three seeds
    assert test.describe() == ("+2.00 [-0.48, +4.48], p = 0.074 (not established: 3 seeds, "
                               "fewer than 5)")
    # differences 0.5, 1, 1.5, 2, 0: mean 1, sd sqrt(0.625), t = 2 sqrt 2 with 4 degrees of
    # freedom: p = 1 - t (t^2 + 6) / (t^2 + 4)^1.5 = 0.04742
    a, b = [70.5, 71.0, 71.5, 72.0, 70.0], [70.0] * 5
    test = paired_test(a, b)
    t = 8 ** 0.5
    assert test.p == pytest.approx(1 - t * 14 / 12 ** 1.5, rel=1e-9)
    assert test.established and test.describe().endswith("p = 0.047, established")
    # paired by seed: a steady 1-point gain is established although the seeds spread by 20
    # points (an unpaired comparison would call it noise)
    seeds = [60.0, 70.0, 80.0, 65.0, 75.0]
    gain = paired_test([v + d for v, d in zip(seeds, [1.0, 1.1, 0.9, 1.0, 1.0])], seeds)
    assert gain.mean_diff == pytest.approx(1.0) and gain.p < 1e-4 and gain.established
    assert paired_test([65.0], [60.0]).describe() == "+5.00 (one seed: no test)"


def test_with_a_validation_split_variants_are_compared_on_it(tmp_path):
    from spikeguide.commands.ablate import CellResult, write_tables

    variants = [VARIANTS["baseline"], VARIANTS["laf"]]
    val = {"baseline": [70.0, 71.0, 72.0], "laf": [71.0, 73.0, 75.0]}
    test = {"baseline": [60.0, 61.0, 62.0], "laf": [60.0, 60.0, 60.0]}
    results = {(k, 1, s): CellResult(best_top1=val[k][s], final_top1=test[k][s],
                                      final_val_top1=val[k][s], firing_rate=0.1, wall_s=1.0)
               for k in val for s in range(3)}
    write_tables(tmp_path, "r", "t", 90.0, results, variants, [1], [0, 1, 2],
                 DistillSettings(4.0, 2.0, 4.0, 2.0))
    table = (tmp_path / "ablation.md").read_text()
    assert f"| +LAF vs baseline | {paired_test(val['laf'], val['baseline']).describe()} |" in table
    assert "Final validation top-1" in table and "choose no setting" not in table
    assert f"| baseline | {summary_cell(test['baseline'])} |" in table  # test still reported
