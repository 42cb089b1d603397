from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from spikeguide.config import parse_config
from spikeguide.errors import SpikeguideError
from spikeguide.machine import cgroup_cpu_limit, read_cpu_times
from spikeguide.training import threads
from spikeguide.training.run import train
from spikeguide.training.threads import choose_threads


@pytest.fixture
def four_cpus(monkeypatch):
    """A process allowed on CPUs 0-3, no cgroup quota, no thread settings."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "affinity_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)


def idle(monkeypatch, value):
    monkeypatch.setattr(threads, "idle_cpus", lambda cpus: value)


def test_an_explicit_setting_wins(four_cpus, monkeypatch):
    idle(monkeypatch, 4.0)
    assert choose_threads(3) == threads.ThreadChoice(3, "train.threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(0) == threads.ThreadChoice(2, "OMP_NUM_THREADS")
    assert choose_threads(3).threads == 3


@pytest.mark.parametrize("idle_cpus,expected", [(3.95, 4), (3.0, 3), (1.6, 1), (0.2, 1)])
def test_busy_cpus_are_left_to_the_jobs_that_keep_them_busy(four_cpus, monkeypatch, idle_cpus,
                                                            expected):
    idle(monkeypatch, idle_cpus)
    choice = choose_threads()
    assert choice.threads == expected
    assert f"{idle_cpus:.1f} of them idle" in choice.reason


def test_quota_and_data_parallel_processes_share_the_cpus(four_cpus, monkeypatch):
    idle(monkeypatch, 4.0)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert choose_threads() == threads.ThreadChoice(
        2, "4 CPU(s) in this process's affinity, a cgroup quota of 2.5 CPU(s), 4.0 of them idle")
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert choose_threads().threads == 1


def test_the_tightest_cgroup_quota_on_the_path_counts(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "a" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "a" / "b" / "cpu.max").write_text("300000 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/a/b\n") == 1.5
    assert cgroup_cpu_limit(tmp_path, "0::/\n") is None
    assert cgroup_cpu_limit(tmp_path, "1:cpu:/a\n") is None  # cgroup v1 only


def test_cpu_times_are_read_per_cpu():
    stat = ("cpu  10 0 10 100 5 0 0 0 0 0\n"
            "cpu0 1 2 3 40 5 6 7 8 9 9\n"
            "cpu1 10 0 0 90 0 0 0 0 0 0\n"
            "intr 12345\n")
    assert read_cpu_times([0], stat) == {0: (45, 72)}  # idle + iowait, the first eight fields
    assert read_cpu_times([0, 1, 2], stat) == {0: (45, 72), 1: (90, 100)}
    if Path("/proc/stat").is_file():  # this machine's own
        now = threads.idle_cpus([0], seconds=0.05)
        assert now is not None and 0.0 <= now <= 1.0


def test_training_sets_the_chosen_threads(tmp_path):
    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1, "threads": 2}))
    train(cfg, max_steps=1)
    assert torch.get_num_threads() == 2
    with pytest.raises(SpikeguideError, match="train.threads must be >= 0"):
        parse_config(tiny_config(tmp_path, train={"threads": -1}))


def test_a_resumed_run_keeps_the_count_it_trained_with(four_cpus, monkeypatch, caplog):
    idle(monkeypatch, 4.0)  # an idle machine now: auto alone would take 4
    assert choose_threads(0, trained_with=2) == threads.ThreadChoice(
        2, "the count the resumed run trained with")
    assert choose_threads(3, trained_with=2).threads == 3  # an explicit setting still wins
    with caplog.at_level("WARNING", logger="spikeguide"):
        threads.set_threads(3, trained_with=2)
    assert "resuming with 3 torch threads (train.threads); the run trained with 2" in caplog.text


def test_the_checkpoint_and_the_config_header_record_the_threads(tmp_path, four_cpus,
                                                                monkeypatch):
    cfg = parse_config(tiny_config(tmp_path, train={"epochs": 1, "threads": 2}))
    train(cfg, max_steps=1)
    assert torch.load(cfg.run_dir / "latest.pt", weights_only=True)["threads"] == 2
    assert "# torch threads: 2\n" in (cfg.run_dir / "config.toml").read_text()
    cfg.train.threads = 0  # auto now: with the CPUs busy it would take 1, the resume keeps 2
    idle(monkeypatch, 0.2)
    assert choose_threads().threads == 1
    train(cfg, resume=True)
    assert torch.get_num_threads() == 2


def test_a_share_given_by_the_caller_ranks_below_a_resumed_runs_count(four_cpus, monkeypatch):
    idle(monkeypatch, 4.0)
    assert choose_threads(0, share=3) == threads.ThreadChoice(3, "this process's share of the CPUs")
    assert choose_threads(0, trained_with=2, share=3).threads == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads(0, trained_with=2, share=3).threads == 1
