import pytest

from conftest import tiny_config, write_recipe
from spikeguide.cli import main, strip_option


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def finished_run(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.toml", tiny_config(tmp_path, train={"epochs": 1}))
    assert run(capsys, "train", str(recipe))[0] == 0
    return recipe, tmp_path / "runs" / "tiny"


def test_train_then_eval_prints_accuracy_and_firing_rate(finished_run, capsys):
    _, run_dir = finished_run
    code, out, _ = run(capsys, "eval", str(run_dir))
    assert code == 0
    header, _, row = out.splitlines()[:3]
    assert header.split() == ["model", "spiking", "T", "top1", "%", "firing", "rate"]
    assert row.split()[:3] == ["resnet20", "True", "2"]
    assert 0 < float(row.split()[-1]) < 1
    assert "the SNN uses" in out and "less energy than its ANN twin" in out
    assert (run_dir / "firing_rate_per_layer.png").is_file()
    code, out, _ = run(capsys, "report", str(run_dir))
    assert code == 0 and "ANN twin" in out and "accuracy.png" in out


def test_another_models_checkpoint_is_named(finished_run, capsys):
    recipe, _ = finished_run
    # allowed, the change still meets the weights' check
    code, _, err = run(capsys, "train", str(recipe), "--resume", "--set", 'model.name="resnet19"',
                       "--allow-changes", "model.name")
    assert code == 2 and "another architecture" in err
    code, _, err = run(capsys, "train", str(recipe), "--resume", "--set", "model.width=0.125",
                       "--allow-changes", "model.width")
    assert code == 2 and "has shape" in err and len(err.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_named(tmp_path, capsys):
    bad = tmp_path / "latest.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "eval", str(bad))
    assert code == 2 and str(bad) in err


def test_strip_option():
    assert strip_option(["train", "r.toml", "--nproc", "2", "--resume"], "--nproc") == \
        ["train", "r.toml", "--resume"]
    assert strip_option(["train", "--nproc=4", "r.toml"], "--nproc") == ["train", "r.toml"]


def test_eval_overrides_change_the_evaluated_model(finished_run, capsys):
    from spikeguide.commands.evaluate import evaluate_run

    _, run_dir = finished_run
    code, out, _ = run(capsys, "eval", str(run_dir), "--set", "model.T=4")
    assert code == 0 and out.splitlines()[2].split()[:3] == ["resnet20", "True", "4"]
    trained = evaluate_run(run_dir)
    lower = evaluate_run(run_dir, ["model.T=4", "neuron.threshold=0.5", "data.eval_batch_size=7"])
    assert trained.model.T == 2 and lower.model.T == 4 and lower.cfg.data.eval_batch_size == 7
    assert {m.threshold for _, m in lower.model.neurons()} == {0.5}
    # the same weights, more spikes below a lower threshold
    assert lower.scores.firing_rate > trained.scores.firing_rate
    assert all(v.equal(lower.model.state_dict()[k]) for k, v in trained.model.state_dict().items())


@pytest.mark.parametrize("override", ['model.name="resnet19"', "model.width=0.5", "train.epochs=3",
                                      'method.name="ann"'])
def test_eval_refuses_overrides_that_would_not_evaluate_the_run(tmp_path, capsys, override):
    # refused before the run is read: no run is needed
    code, out, err = run(capsys, "eval", str(tmp_path), "--set", override)
    key = override.partition("=")[0]
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert f"cannot apply --set {key}" in err and "model.T, neuron.threshold" in err


def test_another_T_is_refused_for_event_frames_which_bring_their_own():
    import torch

    from spikeguide.config import parse_config
    from spikeguide.data import ArrayDataset
    from spikeguide.errors import SpikeguideError
    from spikeguide.training.build import check_frames

    frames = ArrayDataset(torch.zeros(2, 5, 2, 8, 8, dtype=torch.uint8), torch.zeros(2).long(), ["a"])
    check_frames(parse_config({"model": {"T": 5}}), frames)
    with pytest.raises(SpikeguideError, match="model.T is 8 but the event data has 5 frames"):
        check_frames(parse_config({"model": {"T": 8}}), frames)


def test_resume_refuses_a_changed_config_and_names_the_keys(finished_run, capsys):
    recipe, run_dir = finished_run
    before = (run_dir / "config.toml").read_text()
    code, _, err = run(capsys, "train", str(recipe), "--resume", "--set", "optim.lr=0.5",
                       "--set", "model.T=6")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "differs in model.T, optim.lr" in err and "--allow-changes model.T optim.lr" in err
    assert (run_dir / "config.toml").read_text() == before  # never says what the run did not do
    # an allowed change is not an allowance for another one
    code, _, err = run(capsys, "train", str(recipe), "--resume", "--set", "model.T=6",
                       "--set", "train.epochs=2", "--allow-changes", "train.epochs")
    assert code == 2 and "differs in model.T;" in err


def test_allow_changes_extends_a_finished_run(finished_run, capsys):
    from spikeguide.training.runlog import read_metrics

    recipe, run_dir = finished_run
    code, out, err = run(capsys, "train", str(recipe), "--resume", "--set", "train.epochs=2",
                         "--allow-changes", "train.epochs")
    assert code == 0, err
    assert [r.epoch for r in read_metrics(run_dir)] == [1, 2]
    assert "epochs = 2" in (run_dir / "config.toml").read_text()
    code, _, err = run(capsys, "train", str(recipe), "--allow-changes", "train.epochs")
    assert code == 2 and "--allow-changes applies to --resume only" in err


def test_broken_pipe_is_not_a_traceback(finished_run):
    import os
    import subprocess
    import sys

    from conftest import SRC

    _, run_dir = finished_run
    # the reader closes the pipe before eval writes its table
    proc = subprocess.run(f"{sys.executable} -m spikeguide eval {run_dir} | true", shell=True,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"})
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_version(capsys):
    from spikeguide import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"spikeguide {__version__}"


def test_a_run_without_v_prints_one_line_per_epoch_and_tensorboard_gets_every_read(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import run_cli

    # the step curves get a point at every read of the meter: every step with log_every = 1
    recipe = write_recipe(tmp_path / "r.toml",
                          tiny_config(tmp_path, train={"epochs": 2, "log_every": 1}))
    proc = run_cli("train", str(recipe))
    err = proc.stderr
    assert proc.returncode == 0, err
    lines = [ln for ln in err.splitlines() if " epoch " in ln]
    assert [ln.split(":")[0] for ln in lines] == ["tiny epoch 1/2", "tiny epoch 2/2"], err
    events = EventAccumulator(str(tmp_path / "runs" / "tiny" / "tb")).Reload()
    loss, lr = events.Scalars("step/loss"), events.Scalars("step/lr")
    steps = events.Scalars("train/loss")[-1].step  # the last epoch's global step
    assert [e.step for e in loss] == [e.step for e in lr] == list(range(1, steps + 1))
    assert lr[0].value == pytest.approx(0.05) and lr[-1].value < lr[0].value  # cosine, as used


def test_stopped_at_and_resumed_at_name_the_same_epoch(tmp_path, capsys, caplog):
    recipe = write_recipe(tmp_path / "r.toml", tiny_config(tmp_path, train={"epochs": 1}))
    code, out, _ = run(capsys, "train", str(recipe), "--max-steps", "3")
    assert code == 0 and "stopped at epoch 1 step 3;" in out
    with caplog.at_level("INFO", logger="spikeguide"):
        assert run(capsys, "train", str(recipe), "--resume")[0] == 0
    assert "at epoch 1 step 3" in caplog.text and "resumed" in caplog.text


@pytest.mark.slow
def test_verbose_under_two_processes_logs_each_line_once(tmp_path):
    from conftest import ONE_THREAD, run_cli

    recipe = write_recipe(tmp_path / "r.toml", tiny_config(tmp_path, train={"epochs": 1}))
    proc = run_cli("-v", "train", str(recipe), "--nproc", "2", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert sum(ln.startswith("tiny epoch 1/1:") for ln in lines) == 1, proc.stderr
    assert sum(ln.startswith("data loader:") for ln in lines) == 1, proc.stderr


@pytest.mark.slow
def test_ctrl_c_under_two_processes_checkpoints_and_exits_130_without_a_traceback(tmp_path):
    import os
    import signal
    import time

    from conftest import start_cli

    recipe = write_recipe(tmp_path / "r.toml", tiny_config(tmp_path, train={"epochs": 30}))
    proc = start_cli("train", str(recipe), "--nproc", "2", start_new_session=True)
    while proc.poll() is None and not (tmp_path / "runs" / "tiny" / "metrics.jsonl").exists():
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "stopped at epoch" in out and "Traceback" not in err, err


def test_a_quickstart_stopped_by_a_signal_trains_no_student_and_says_so(tmp_path, capsys,
                                                                        monkeypatch):
    import signal

    from spikeguide.commands import quickstart
    from spikeguide.training.trainer import StoppedAt, TrainSummary

    trained = []

    def stopped_teacher(cfg, overwrite):
        trained.append(cfg.name)
        return TrainSummary(True, -1.0, None, StoppedAt(0, 3, signal.SIGTERM, "latest.pt"),
                            run_dir=str(cfg.run_dir))

    monkeypatch.setattr(quickstart, "train", stopped_teacher)
    code, out, err = run(capsys, "quickstart", "--out", str(tmp_path))
    assert trained == ["ann"] and code == 128 + signal.SIGTERM
    assert "ann stopped by signal 15 in epoch 1" in err and "runs written to" in out
