"""benchmarks/bench_engine.py: interleaved order, which rows are skipped and why, the
worker protocol, and an end-to-end run without the ``bench`` extra's packages."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from msrnet_napari.config import MSRNetConfig, parameter_shapes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import bench_engine
finally:
    sys.path.pop(0)


def test_schedule_interleaves_backends_per_repeat():
    order = bench_engine.schedule(["ours", "torch-nchw", "openvino"], 2)
    assert order == [(0, "ours"), (0, "torch-nchw"), (0, "openvino"),
                     (1, "ours"), (1, "torch-nchw"), (1, "openvino")]


def _plan(size=512, **kw):
    opts = dict(have_torch=True, onnx_error="", have=lambda m: True,
                skip_torch_above=2048, skip_runtimes_above=1024)
    opts.update(kw)
    return bench_engine.plan(size, bench_engine.BACKENDS, **opts)


def test_plan_runs_everything_when_all_is_there():
    run, skipped = _plan()
    assert run == list(bench_engine.BACKENDS) and skipped == {}


def test_plan_skips_missing_runtimes_with_a_note():
    run, skipped = _plan(have=lambda m: m != "openvino")
    assert run == ["ours", "torch-nchw", "torch-cl", "onnxruntime"]
    assert "not installed" in skipped["openvino"] and "[bench]" in skipped["openvino"]


def test_plan_without_torch_or_export_runs_ours_only():
    run, skipped = _plan(have_torch=False, onnx_error="needs torch to export")
    assert run == ["ours"]
    assert skipped["torch-nchw"] == "torch not installed"
    assert skipped["onnxruntime"] == skipped["openvino"] == "needs torch to export"


def test_plan_size_limits_per_family():
    run, skipped = _plan(size=2048)  # torch up to 2048, runtimes up to 1024 here
    assert run == ["ours", "torch-nchw", "torch-cl"]
    assert "--skip-runtimes-above 1024" in skipped["onnxruntime"]
    run, _ = _plan(size=4096)
    assert run == ["ours"]


def _numpy_weights(path):
    rng = np.random.default_rng(0)
    np.savez(path, **{k: (rng.standard_normal(s) * 0.1).astype(np.float32)
                      for k, s in parameter_shapes(MSRNetConfig()).items()})


def test_worker_protocol_times_each_run_and_saves_the_last_output(tmp_path, monkeypatch):
    from msrnet_napari import _core

    weights = tmp_path / "w.npz"
    _numpy_weights(weights)
    out = tmp_path / "out.npy"
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    bench_engine.worker("ours", 40, 1, 256, str(weights), "",
                        commands=["run", "run", f"end {out}"])
    lines = [json.loads(s[len(bench_engine.MARK):]) for s in stdout.getvalue().splitlines()]
    assert lines[0]["ready"] and "simd" in lines[0]
    assert [sorted(m) for m in lines[1:3]] == [["cpu", "time"]] * 2
    assert all(m["time"] > 0 and m["cpu"] >= 0 for m in lines[1:3])
    assert lines[3]["rss_mib"] > 0 and len(lines) == 4
    with np.load(weights) as f:
        eng = _core.Engine(MSRNetConfig().engine_dict(), {k: f[k] for k in f.files})
    np.testing.assert_array_equal(np.load(out), eng.run(bench_engine._image(40), threads=1))


def test_main_without_the_runtimes_skips_their_rows(monkeypatch, capsys):
    monkeypatch.setattr(bench_engine, "installed", lambda module: False)
    bench_engine.main(["--sizes", "48", "--repeat", "2", "--threads", "1",
                       "--backends", "ours", "onnxruntime", "openvino"])
    text = capsys.readouterr().out
    assert "onnxruntime: onnxruntime not installed" in text
    assert "openvino: openvino not installed" in text
    rows = [line for line in text.splitlines() if line.startswith("| 1 | 48^2")]
    assert len(rows) == 1 and "ours" in rows[0] and "failed" not in rows[0]


@pytest.mark.slow
def test_runtimes_agree_with_the_reference(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    bench_engine.main(["--sizes", "40", "--repeat", "1", "--threads", "1"])
    rows = {line.split("|")[3].strip(): line.split("|")
            for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 | 40^2")}
    for b in ("onnxruntime", "openvino", "torch-cl"):
        assert float(rows[b][12].split()[0]) <= bench_engine.DIFF_LIMIT, rows[b]
