"""benchmarks/gpu_check.py: its smoke run takes every section's path on CPU, and the pieces that
decide (pass/fail, time boxes, the ``auto`` recommendation) decide right."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch


ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SECTIONS = ["environment", "correctness", "speed", "memory", "profile", "pipeline", "training"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--smoke", "--out", str(out),
         "--work", str(tmp_path_factory.mktemp("gpu_check_work")),
         "--budget", "3600"],  # every code path, however loaded the machine: nothing skipped
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "gpu_check.json").read_text())


@pytest.fixture
def gpucheck(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return lambda name: importlib.import_module(f"gpucheck.{name}")


def test_smoke_run_writes_every_section_in_files_the_device_tool_returns(smoke):
    out, doc = smoke
    assert list(doc["sections"]) == SECTIONS
    assert {k: s["status"] for k, s in doc["sections"].items()} == dict.fromkeys(SECTIONS, "ok")
    files = sorted(p.name for p in out.iterdir())
    # at most 8 files come back from a device run: a full run adds the second row's two
    assert files == ["fast_ann_resnet20_metrics.jsonl", "fast_enof_resnet20_t4_metrics.jsonl",
                     "gpu.md", "gpu_check.json", "gpu_check.log"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)
    md = (out / "gpu.md").read_text()
    assert "Smoke run on CPU" in md and "Recommendation:" in md
    assert re.search(r"^Commit: `[0-9a-f]{7,}", md, re.M) and doc["commit"] != "unknown"
    assert doc["device"]
    for section in doc["sections"].values():
        assert f"## {section['title']}" in md


def test_smoke_correctness_checks_every_backend_and_the_recording(smoke):
    section = smoke[1]["sections"]["correctness"]
    checks = section["checks"]
    assert len(checks) > 100 and all(c["passed"] for c in checks)
    units = {(row[0], row[1]) for row in section["tables"][0]["rows"]}
    backends = {b for _, b in units}
    assert {"fused", "record eager", "record compiled"} <= backends  # the CPU's recording kernel
    if importlib.util.find_spec("triton") is not None:  # in Triton's CPU interpreter
        assert "triton" in backends
    assert len({u for u, _ in units}) == 7  # no unit left out
    assert section["data"]["failed"] == []


def test_smoke_speed_times_both_precisions_formats_and_spikingjelly(smoke):
    section = smoke[1]["sections"]["speed"]
    groups = section["data"]["groups"]
    assert [(g["network"].split()[0], g["precision"]) for g in groups] == [
        ("resnet20", "fp32"), ("spikformer", "fp32"), ("resnet20", "bf16"), ("spikformer", "bf16")]
    for group in groups:
        labels = set(group["rows"])
        for fmt in ("contiguous", "channels_last"):
            assert {f"spikeguide torch, {fmt}", f"spikeguide fused, {fmt}"} <= labels
        assert all(max(r["rates"]) > 0 for r in group["rows"].values())
        assert all(r["first_step_s"] > 0 for r in group["rows"].values())
        assert group["step_flops"] > 0
        # the compiled auto row (the first network's): its compilation is its first step
        if group["network"].startswith("resnet20"):
            assert group["rows"]["spikeguide auto + torch.compile, channels_last"]["runs"] in (
                "compiled", "fused")
        sj_rows = {label: r for label, r in group["rows"].items() if r["kind"] == "spikingjelly"}
        if importlib.util.find_spec("spikingjelly") is None:
            assert not sj_rows
        else:  # this process's implementation and the child process's, in both formats
            assert len(sj_rows) == 4
            # bf16 through SpikingJelly's precision API, never its plain-autocast path
            assert all(("precision API" in label) == (group["precision"] == "bf16")
                       for label in sj_rows)
    assert section["data"]["bf16_matmul_tflops"] > 0
    notes = "\n".join(section["notes"])
    if importlib.util.find_spec("spikingjelly") is not None:
        assert "twin check in train mode: first step" in notes and "after one step" in notes
        assert "SpikingJelly's own Spikformer at the same depth, width and heads" in notes
        assert "SpikingJelly's fastest is" in notes
    table = section["tables"][1]  # the first group (after the matmul ceiling)
    assert table["header"][-3:] == ["vs SJ fastest (best)", "vs SJ fastest (median)", "verdict"]
    assert {row[-1] for row in table["rows"]} <= {None, "one round: not judged"}  # one round
    assert set(section["data"]["layer_ms"]) >= {"torch", "fused"}


def test_smoke_memory_pipeline_and_training_figures(smoke):
    out, doc = smoke
    rows = doc["sections"]["memory"]["data"]["rows"]
    assert {(r["method"], r["T"]) for r in rows} == {
        (m, T) for m in ("bptt", "ratebp", "hybrid") for T in (1, 2)}
    assert all(r["peak_mib"] is None and r["step_s"] > 0 for r in rows)  # CPU: time only
    assert all(r["steps"] >= 1 and r["first_step_s"] > 0 for r in rows)  # the first apart
    profiled = doc["sections"]["profile"]["data"]["methods"]
    assert set(profiled) == {"ratebp", "hybrid", "bptt"}
    for method, top in profiled.items():
        assert len(top) == 12 and top[0]["self_ms"] >= top[-1]["self_ms"] > 0
    assert any("convolution" in row["name"] for row in profiled["ratebp"])
    pipeline = doc["sections"]["pipeline"]
    assert pipeline["data"]["memory_img_s"] > 0 and pipeline["data"]["stream_img_s"] > 0
    runs = doc["sections"]["training"]["data"]["runs"]
    assert [r["spiking"] for r in runs] == [False, True]
    # one train.time_budget: the teacher its recipe's 30 %, the student the rest
    assert runs[0]["budget_s"] == pytest.approx(0.3 / 0.7 * runs[1]["budget_s"])
    for run, name in zip(runs, ("fast_ann_resnet20", "fast_enof_resnet20_t4")):
        assert run["epochs_planned"] == 1 and len(run["metrics"]) == 1
        assert 0 <= run["metrics"][0]["test_top1"] <= 100
        copied = (out / f"{name}_metrics.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in copied] == run["metrics"]
    assert runs[1]["metrics"][0]["test_firing_rate"] > 0


def test_a_wrong_kernel_fails_the_comparison(gpucheck):
    correctness = gpucheck("correctness")
    from spikeguide.neurons import LIF, PLIF

    x, g = correctness.currents(4, (4, 8, 8), torch.device("cpu"), seed=0)
    passed, detail, _ = correctness.compare_fp32(LIF(backend="torch"), LIF(backend="fused"), x, g)
    assert passed, detail
    passed, detail, _ = correctness.compare_fp32(LIF(backend="torch"),
                                                 LIF(decay=0.51, backend="fused"), x, g)
    assert not passed and "spikes differ" in detail
    # a decay gradient off by more than DECAY_RTOL, with the same spikes and input gradient
    ref = PLIF(0.6, backend="torch")
    passed, detail, _ = correctness.compare_fp32(ref, ref, x, g)
    assert passed, detail

    class ScaledDecayGradient(PLIF):
        def membrane_decay(self):
            decay = super().membrane_decay()
            return decay + 1e-3 * (decay - decay.detach())  # same value, gradient x 1.001

    scaled = ScaledDecayGradient(0.6, backend="torch")
    passed, detail, _ = correctness.compare_fp32(ref, scaled, x, g)
    assert not passed and "decay gradient relative error 1.0e-03" in detail


def test_a_unit_that_does_not_fit_is_left_out_and_said(gpucheck):
    results, timebox = gpucheck("results"), gpucheck("timebox")
    result = results.SectionResult("memory", "4. Memory")
    box = timebox.TimeBox(timebox.Clock(100.0), 0.5, result)
    assert box.fits(0.1, "small")
    assert not box.fits(5.0, "bptt at T=8")
    assert result.skipped[0].startswith("bptt at T=8 (needs about 5 s")
    assert result.status == "partial"
    result.check("a check", False, "wrong")
    assert result.status == "failed"
    result.error = "RuntimeError: boom"
    assert result.status == "error"


def group(precision: str, rates: dict[tuple[str, str], float]) -> dict:
    return {"network": "net", "precision": precision,
            "rows": {f"{b}, {f}": {"kind": "spikeguide", "backend": b, "format": f, "rates": [r]}
                     for (b, f), r in rates.items()}}


@pytest.mark.parametrize("triton_rate,failed,expected", [
    (120.0, [], "triton"),  # 1.2x fused (its best format)
    (101.0, [], "fused"),  # within noise
    (120.0, ["triton"], "fused"),  # fast but wrong: never picked
])
def test_auto_recommendation(gpucheck, triton_rate, failed, expected):
    recommend = gpucheck("recommend")
    groups = [group("fp32", {("fused", "contiguous"): 100.0, ("fused", "channels_last"): 90.0,
                             ("triton", "contiguous"): triton_rate / 1.3,
                             ("triton", "channels_last"): triton_rate,
                             ("torch", "contiguous"): 80.0}),
              group("bf16", {("fused", "contiguous"): 10.0, ("torch", "contiguous"): 500.0})]
    advice = recommend.recommend_auto(groups, failed, "fused")
    assert advice["recommended"] == expected
    assert advice["ratios"]["torch"] == pytest.approx(0.8)  # bf16 groups do not count
    text = "\n".join(advice["lines"])
    assert ("FAILED correctness" in text) == bool(failed)
    if expected == "triton":
        assert "channels_last with 'triton': 1.30x" in text
    else:
        assert "channels_last with 'fused': 0.90x" in text and "default (off) stays" in text


def test_no_recommendation_without_a_figure_of_todays_backend(gpucheck):
    recommend = gpucheck("recommend")
    advice = recommend.recommend_auto([group("fp32", {("torch", "contiguous"): 1.0})], [], "fused")
    assert advice["recommended"] is None and "no recommendation" in advice["lines"][-1]


def test_a_missing_data_file_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--smoke", "--data",
                           str(tmp_path / "absent.tar.gz"), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"gpu_check: error: --data {str(tmp_path / 'absent.tar.gz')!r} does not exist: pass the "
        "packed CIFAR-10 JPEG copy (benchmarks/prepare_gpu_carry.sh puts it in gpu_carry/) or its "
        "unpacked folder"]


def test_a_ratio_inside_the_rounds_spread_is_not_a_win(gpucheck):
    speed = gpucheck("speed")
    sj = {"rates": [100.0, 104.0, 96.0]}  # spread 8%
    assert speed.verdict({"rates": [105.0, 106.0, 104.0]}, sj) == "within noise"
    assert speed.verdict({"rates": [120.0, 121.0, 119.0]}, sj) == "faster"
    assert speed.verdict({"rates": [80.0, 81.0, 79.0]}, sj) == "slower"
    assert speed.verdict({"rates": [120.0]}, {"rates": [100.0]}) == "one round: not judged"


def test_step_flops_count_convolutions_and_linear_layers(gpucheck):
    flops = gpucheck("flops")
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    x = torch.randn(2, 3, 5, 5)
    macs = 2 * 8 * 25 * 3 * 9 + 2 * 8 * 25 * 4 * 9 + 2 * 10 * 8  # per output: in/groups x k x k
    assert flops.forward_macs(model, x) == macs
    assert flops.step_flops(model, x) == 6 * macs
    assert model.training  # the count runs in eval mode and leaves the mode as it was
