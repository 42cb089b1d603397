"""train.time_budget: the duration format, the epoch plan, and budgeted runs on a fake clock."""

import pytest

from conftest import state_equal, tiny_config, write_recipe
from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.training import budget
from spikeguide.training.budget import EpochCost, parse_duration, plan_epochs, run_seconds
from spikeguide.training.checkpoint import load_checkpoint
from spikeguide.training.run import is_finished, train
from spikeguide.training.runlog import read_metrics
from spikeguide.training.teacher import teacher_config, teacher_spent_seconds
from spikeguide.training.trainer import Trainer

STEPS = 1437 // 64  # the tiny run's steps per epoch (digits, batch 64, drop_last)


@pytest.mark.parametrize("text, seconds", [("8m", 480), ("2h", 7200), ("90s", 90), ("90", 90),
                                           ("1h30m", 5400), ("0.5h", 1800), (600, 600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["8 minutes", "m", "-5", "0", "8m2", ""])
def test_a_bad_duration_is_a_one_line_error_naming_the_key(tmp_path, text):
    with pytest.raises(SpikeguideError, match="train.time_budget must be") as e:
        parse_config(tiny_config(tmp_path, train={"time_budget": text}))
    assert "\n" not in str(e.value)


def test_teacher_share_needs_a_budget_and_a_recipe(tmp_path):
    with pytest.raises(SpikeguideError, match="teacher.budget_share needs"):
        parse_config(tiny_config(tmp_path, teacher={"budget_share": 0.3}))
    with pytest.raises(SpikeguideError, match=r"teacher.budget_share must be in \(0, 1\)"):
        parse_config(tiny_config(tmp_path, teacher={"budget_share": 1.0, "recipe": "t.toml"},
                                 train={"time_budget": "1m"}))


def test_the_teacher_recipe_trains_in_its_share_and_the_student_in_the_rest(tmp_path):
    recipe = write_recipe(tmp_path / "teacher.toml",
                          tiny_config(tmp_path, name="teacher", method={"name": "ann"}))
    cfg = parse_config(tiny_config(tmp_path, teacher={"recipe": str(recipe), "budget_share": 0.25},
                                   train={"time_budget": "4m"}))
    assert teacher_config(cfg).train.time_budget == 60
    assert run_seconds(cfg) == 180
    # what the teacher's run left of its 60 s goes to the student; it never takes more
    assert run_seconds(cfg, teacher_spent_s=45) == 195
    assert run_seconds(cfg, teacher_spent_s=70) == 180
    assert run_seconds(parse_config(tiny_config(tmp_path, train={"time_budget": "4m"}))) == 240


def test_the_student_budget_is_what_the_teachers_recorded_run_left(tmp_path):
    recipe = write_recipe(tmp_path / "teacher.toml", tiny_config(
        tmp_path, name="teacher", method={"name": "ann"}, train={"epochs": 1}))
    cfg = parse_config(tiny_config(tmp_path, teacher={"recipe": str(recipe), "budget_share": 0.5},
                                   train={"time_budget": "1h"}))
    assert teacher_spent_seconds(cfg) is None  # not trained yet
    train(teacher_config(cfg))
    spent = read_metrics(tmp_path / "runs" / "teacher")[-1].elapsed_s
    assert 0 < spent < 1800
    assert teacher_spent_seconds(cfg) == spent
    no_share = parse_config(tiny_config(tmp_path, teacher={"recipe": str(recipe)}))
    assert teacher_spent_seconds(no_share) is None


def test_plan_against_a_hand_computed_example():
    # 10 steps of 0.1 s an epoch; 192 images evaluated an epoch at a third of a step per 64:
    # 0.1 s; the margin 1.1: 1.21 s an epoch. 6 steps took 3 s, 2.4 s more than steady steps
    cost = EpochCost(steps=10, batch_size=64, eval_images=192, final_images=0)
    plan = plan_epochs(100, 3.0, 6, 0.1, cost, cap=300)
    assert plan.epochs == 80  # floor((100 - 2.4) / 1.21) = floor(80.66)
    assert plan.end_s == pytest.approx(2.4 + 80 * 1.21)
    assert plan_epochs(100, 3.0, 6, 0.1, cost, cap=50).epochs == 50
    assert plan_epochs(1, 3.0, 6, 0.1, cost, cap=50).epochs == 1  # at least one
    # a final test pass of 6400 images: 100 batches at 0.1 / 3 s, 1.1 * 3.33 = 3.67 s
    final = EpochCost(steps=10, batch_size=64, eval_images=192, final_images=6400)
    assert plan_epochs(100, 3.0, 6, 0.1, final, cap=300).epochs == 77  # floor(77.63)


@pytest.fixture
def fake_clock(monkeypatch):
    """Training steps advance the budget's clock: the first by 5 s, then ``clock.step_s``."""

    class Clock:
        t = 0.0
        steps = 0
        step_s = [1.0]  # per step from the second on; the list's last value repeats

    clock = Clock()
    monkeypatch.setattr(budget, "now", lambda: clock.t)
    original = Trainer._train_step

    def timed_step(self, x, y):
        stop = original(self, x, y)
        later = clock.step_s[min(clock.steps, len(clock.step_s)) - 1]
        clock.t += 5.0 if clock.steps == 0 else later
        clock.steps += 1
        return stop

    monkeypatch.setattr(Trainer, "_train_step", timed_step)
    return clock


def budgeted(tmp_path, name="budgeted", **train):
    return parse_config(tiny_config(tmp_path, name=name,
                                    train={"epochs": 10, "time_budget": 100, **train}))


def test_the_run_plans_its_epochs_from_the_timed_steps_and_ends_its_schedule(tmp_path, fake_clock):
    # steady 1 s steps, 5 s more for the first: 4 s overhead; an epoch is 1.1 * (22 + 359/64/3)
    # = 26.26 s: floor(96 / 26.26) = 3 epochs
    cfg = budgeted(tmp_path)
    summary = train(cfg)
    assert summary.stopped is None and summary.last.epoch == 3
    assert load_checkpoint(cfg.run_dir / "latest.pt")["epochs"] == 3
    records = read_metrics(cfg.run_dir)
    assert [r.epoch for r in records] == [1, 2, 3]
    assert records[-1].lr < 0.01 * cfg.optim.lr  # the cosine laid over 3 epochs, not 10
    assert is_finished(cfg)


def test_an_epoch_shorter_than_the_timed_steps_plans_at_its_end(tmp_path, fake_clock):
    # 4 steps an epoch (256 images): 5 + 3 * 1 s; an epoch 1.1 * (4 + 359 / 64 / 3) = 6.46 s:
    # floor((30 - 4) / 6.46) = 4 epochs
    cfg = budgeted(tmp_path, time_budget=30)
    cfg.data.train_subset = 256
    train(cfg)
    assert load_checkpoint(cfg.run_dir / "latest.pt")["epochs"] == 4
    assert len(read_metrics(cfg.run_dir)) == 4


def test_a_short_estimate_stops_at_the_deadline_with_the_epoch_scored(tmp_path, fake_clock):
    # planned on 1 s steps (3 epochs), and planned so again after the first epoch (22 steps);
    # then 4 s a step from the 24th step on
    fake_clock.step_s = [1.0] * 23 + [4.0]
    cfg = budgeted(tmp_path)
    summary = train(cfg)
    # 28 s after 24 steps, 4 s a step after: 100 s spent after step 42, found right after it
    assert summary.stopped is None and summary.last.epoch == 2
    state = load_checkpoint(cfg.run_dir / "latest.pt")
    assert (state["epoch"], state["epochs"], state["step"]) == (2, 2, 0)
    assert state["global_step"] == 42  # no step starts once the time is spent
    assert summary.last.test is not None
    assert is_finished(cfg)


@pytest.mark.parametrize("probe_s, later_s, first, second", [
    # probe steps of 1.5 s, the rest of the epoch 1 s (the lab's slow probe): the first plan
    # floor((100 - 3.5) / (1.1 * (22 + 359 / 192) * 1.5)) = 2 epochs; the epoch's mean step
    # (5 * 1.5 + 16 * 1) / 21 = 1.119 s, 28.5 - 22 * 1.119 = 3.88 s overhead:
    # floor(96.12 / (1.1 * 23.87 * 1.119)) = 3
    (1.5, 1.0, 2, 3),
    # probe steps of 1 s, then 2 s: 3 epochs first, then the mean 1.762 s, overhead
    # 42 - 22 * 1.762 = 3.24 s: floor(96.76 / (1.1 * 23.87 * 1.762)) = 2
    (1.0, 2.0, 3, 2),
])
def test_the_first_epochs_pace_plans_again(tmp_path, fake_clock, caplog, probe_s, later_s,
                                           first, second):
    fake_clock.step_s = [probe_s] * 5 + [later_s]
    cfg = budgeted(tmp_path)
    with caplog.at_level("INFO", logger="spikeguide"):
        summary = train(cfg)
    plans = [r.getMessage() for r in caplog.records if "planned to end" in r.getMessage()]
    assert [int(m.split(" epoch(s)")[0].rsplit(" ", 1)[1]) for m in plans] == [first, second]
    assert plans[1].startswith("planned again from the first epoch's pace")
    assert summary.last.epoch == second == load_checkpoint(cfg.run_dir / "latest.pt")["epochs"]
    assert read_metrics(cfg.run_dir)[-1].lr < 0.01 * cfg.optim.lr  # the cosine re-laid


def test_a_budget_spent_before_the_plan_ends_the_first_epoch_finished(tmp_path, fake_clock):
    cfg = budgeted(tmp_path, time_budget=3)  # the first step alone takes 5 s
    summary = train(cfg)
    assert summary.stopped is None and summary.last.epoch == 1
    state = load_checkpoint(cfg.run_dir / "latest.pt")
    assert (state["epochs"], state["global_step"]) == (1, 1)  # stopped right after that step
    assert is_finished(cfg)


def test_a_resumed_budgeted_run_keeps_its_plan_and_matches_the_uninterrupted_one(tmp_path,
                                                                              fake_clock):
    full = budgeted(tmp_path, name="full")
    train(full)
    fake_clock.t, fake_clock.steps = 0.0, 0
    part = budgeted(tmp_path, name="part")
    assert train(part, max_steps=STEPS + 3).stopped is not None
    assert load_checkpoint(part.run_dir / "latest.pt")["epochs"] == 3
    fake_clock.step_s = [0.01]  # a re-estimate would plan 10 epochs now
    assert train(part, resume=True).last.epoch == 3
    assert state_equal(load_checkpoint(full.run_dir / "latest.pt")["model"],
                       load_checkpoint(part.run_dir / "latest.pt")["model"])
