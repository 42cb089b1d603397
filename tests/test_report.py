import json

import pytest

from spikeguide.analysis.report import report
from spikeguide.errors import SpikeguideError


def test_report_summarizes_and_plots(tmp_path):
    records = [
        {"epoch": 1, "global_step": 10, "lr": 0.1, "test_top5": 90.0, "train_loss": 2.0, "test_loss": 1.9, "train_top1": 30.0,
         "test_top1": 40.0, "test_firing_rate": 0.2, "elapsed_s": 30.0,
         "test_layer_rates": {"a": 0.1, "b": 0.3}},
        {"epoch": 2, "global_step": 20, "lr": 0.05, "test_top5": 95.0, "train_loss": 1.0, "test_loss": 1.2, "train_top1": 60.0,
         "test_top1": 70.0, "test_firing_rate": 0.15, "elapsed_s": 60.0,
         "test_layer_rates": {"a": 0.05, "b": 0.25}},
        {"epoch": 3, "global_step": 30, "lr": 0.0, "test_top5": 96.0, "train_loss": 0.8, "test_loss": 1.3, "train_top1": 70.0,
         "test_top1": 65.0, "test_firing_rate": 0.12, "elapsed_s": 90.0,
         "test_layer_rates": {"a": 0.04, "b": 0.2}},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary, plots = report(tmp_path)
    assert summary == {"epochs": 3, "final top1 %": 65.0, "best top1 %": 70.0, "best epoch": 2,
                       "final firing rate": 0.12, "train minutes": 1.5}
    assert [p.name for p in plots] == ["loss.png", "accuracy.png", "firing_rates.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_report_of_a_folder_without_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(SpikeguideError, match="no metrics.jsonl"):
        report(tmp_path)


def test_a_log_line_that_is_not_an_epoch_record_is_a_clear_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_top1": 50.0}) + "\n")
    with pytest.raises(SpikeguideError, match=r"metrics.jsonl line 1 is not an epoch record.*KeyError"):
        report(tmp_path)


def test_plots_of_a_one_epoch_run_show_their_points_and_no_legend_covers_them(tmp_path,
                                                                            monkeypatch):
    import spikeguide.analysis.report as report_module

    record = {"epoch": 1, "global_step": 10, "lr": 0.1, "test_top5": 90.0, "train_loss": 2.0,
              "test_loss": 1.9, "train_top1": 30.0, "test_top1": 40.0, "test_firing_rate": 0.2,
              "elapsed_s": 30.0, "test_layer_rates": {"stem.act1": 0.1, "stages.0.0.act1": 0.3,
                                                      "stages.0.1.act1": 0.2,
                                                      "stages.1.0.act1": 0.25}}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    figures = {}
    real_save = report_module.save

    def keep(fig, path):
        fig.canvas.draw()
        figures[path.name] = (fig.axes[0], [ln for ln in fig.axes[0].get_lines()],
                              fig.axes[0].get_legend().get_window_extent(),
                              fig.axes[0].get_window_extent())
        return real_save(fig, path)

    monkeypatch.setattr(report_module, "save", keep)
    report(tmp_path)
    for name, (ax, lines, legend, axes) in figures.items():
        # one point per curve: a line without a marker draws nothing
        assert lines and all(ln.get_marker() not in (None, "None", "") for ln in lines), name
        assert legend.x0 >= axes.x1, name  # beside the axes
    _, lines, _, _ = figures["firing_rates.png"]
    assert [ln.get_label() for ln in lines] == list(record["test_layer_rates"])
    colours = [ln.get_color() for ln in lines]
    assert colours[1] == colours[2] != colours[3] and colours[0] != colours[1]  # one per stage
    styles = {(ln.get_color(), ln.get_marker()) for ln in lines}
    assert len(styles) == len(lines)  # every layer's curve can be told apart
    _, loss_lines, _, _ = figures["loss.png"]
    assert [ln.get_label() for ln in loss_lines] == ["train: the method's objective",
                                                     "test: cross-entropy"]
