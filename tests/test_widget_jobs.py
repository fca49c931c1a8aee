"""The widget's Qt-free part (widget_jobs): planning, decisions, running jobs. No display."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from msrnet_napari import widget_jobs as J


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small random-weights photo checkpoint (needs torch only to write it)."""
    pytest.importorskip("torch")
    from msrnet_napari.config import MSRNetConfig
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    model = init_weights(MSRNet(MSRNetConfig(depth=2, width=8, exposure_target=0.4)), seed=0)
    return save_checkpoint(model, tmp_path_factory.mktemp("weights") / "random.pt")




def test_plan_job_2d_and_rgb_are_whole_images():
    gray = np.zeros((10, 12), np.uint8)
    arr, idx = J.plan_job(gray, False, (3, 4), whole_stack=False)
    assert arr.shape == (10, 12) and idx == (slice(None), slice(None))
    rgb = np.zeros((10, 12, 3), np.uint8)
    arr, idx = J.plan_job(rgb, True, (0, 0), whole_stack=False)
    assert arr.shape == (10, 12, 3) and len(idx) == 3


def test_plan_job_current_plane_keeps_dims_and_clips_step():
    stack = np.arange(4 * 5 * 6 * 7).reshape(4, 5, 6, 7)
    arr, idx = J.plan_job(stack, False, (2, 3, 0, 0), whole_stack=False)
    assert arr.shape == (1, 1, 6, 7)
    np.testing.assert_array_equal(arr[0, 0], stack[2, 3])
    assert J.plane_offset(idx, rgb=False) == (2, 3, 0, 0)
    arr, idx = J.plan_job(stack, False, (99, -5, 0, 0), whole_stack=False)
    np.testing.assert_array_equal(arr[0, 0], stack[3, 0])
    arr, idx = J.plan_job(stack, False, (2, 3, 0, 0), whole_stack=True)
    assert arr.shape == stack.shape and J.plane_offset(idx, False) == (0, 0, 0, 0)


def test_plan_job_rgb_stack_and_multiscale():
    rgb_stack = np.zeros((3, 8, 9, 3), np.uint8)
    rgb_stack[1] = 7
    arr, idx = J.plan_job(rgb_stack, True, (1, 0, 0), whole_stack=False)
    assert arr.shape == (1, 8, 9, 3) and arr.max() == 7
    assert J.plane_offset(idx, rgb=True) == (1, 0, 0)
    pyramid = [np.ones((2, 16, 16), np.uint8), np.ones((2, 8, 8), np.uint8)]
    arr, _ = J.plan_job(pyramid, False, (1, 0, 0), whole_stack=False, multiscale=True)
    assert arr.shape == (1, 16, 16)


@pytest.mark.parametrize("data, rgb, match", [
    (np.zeros(5), False, "at least 2 axes"),
    (np.zeros((4, 4)), True, "RGB"),
    (np.zeros((4, 4, 2)), True, "3 or 4 channels"),
    (np.zeros((4, 4), bool), False, "unsupported data type"),
    (np.zeros((4, 4), complex), False, "unsupported data type"),
    (np.zeros((0, 4)), False, "empty"),
])
def test_plan_job_rejects_bad_data(data, rgb, match):
    with pytest.raises(J.JobError, match=match):
        J.plan_job(data, rgb, (0, 0), whole_stack=False)


def test_plan_job_dask_stays_lazy():
    da = pytest.importorskip("dask.array")
    stack = da.zeros((6, 32, 32), dtype=np.uint8, chunks=(1, 32, 32))
    arr, _ = J.plan_job(stack, False, (4, 0, 0), whole_stack=False)
    assert J.is_dask(arr) and arr.shape == (1, 32, 32)
    assert not J.should_stay_lazy(arr, whole_stack=False)
    assert not J.should_stay_lazy(stack, whole_stack=True)  # small: computed
    assert J.should_stay_lazy(stack, whole_stack=True, threshold_bytes=1000)
    assert not J.should_stay_lazy(np.zeros((6, 32, 32)), whole_stack=True, threshold_bytes=0)


def test_widget_asks_the_core_for_the_photo_scaling(checkpoint):
    """What the widget used to decide itself now comes from scaling_for (photo model)."""
    def scaling(data, bit_depth=0):
        job = J.Job(array=data, reference=None, rgb=False, lazy=False, weights=checkpoint,
                    bit_depth=bit_depth)
        s = J.preview_decision(job).photo.scaling
        return (s.low, s.high)

    assert scaling(np.zeros((4, 4), np.uint8)) == (0.0, 255.0)
    assert scaling(np.full((4, 4), 4000, np.uint16)) == (0.0, 4095.0)
    assert scaling(np.full((4, 4), 5000, np.uint16)) == (0.0, 16383.0)
    assert scaling(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)) == (0.0, 1.0)
    assert scaling(np.array([[2.0, 10.0], [3.0, 4.0]])) == (2.0, 10.0)
    dim_12bit = np.full((4, 4), 900, np.uint16)
    assert scaling(dim_12bit) == (0.0, 1023.0)
    assert scaling(dim_12bit, bit_depth=12) == (0.0, 4095.0)
    with pytest.raises(J.JobError, match="NaN"):
        scaling(np.array([[0.1, np.nan], [0.2, 0.3]]))
    with pytest.raises(J.JobError, match="negative"):
        scaling(np.array([[-3, 5], [1, 2]], np.int16))
    with pytest.raises(J.JobError, match="constant"):
        scaling(np.full((4, 4), 5.0))
    with pytest.raises(J.JobError, match="bit_depth"):
        scaling(np.full((4, 4), 4000, np.uint16), bit_depth=8)


def test_preview_of_the_linear_model_shows_offset_scale_and_gain():
    from conftest import random_weights
    from msrnet_napari.config import MSRNetConfig

    ckpt = random_weights(MSRNetConfig(log_bases=(1e-4,), depth=2, width=4, intensity="linear"),
                          identity=True)
    data = np.random.default_rng(0).poisson(5, (64, 64)).astype(np.uint16) + 100
    job = J.Job(array=data, reference=None, rgb=False, lazy=False, weights=ckpt,
                offset=J.parse_offset("auto"), gain=3.0, input_limits=(90.0, 130.0))
    decision = J.preview_decision(job)
    text = decision.describe()
    assert "dark 10" in text and "(auto)" in text and "gain 3" in text
    out = J.execute_job(job)
    assert out.status == "ok", out.message
    assert out.contrast_limits == (90.0, 130.0)  # the input's display, same units
    job.offset = J.parse_offset("100")
    assert "dark 100 (given)" in J.preview_decision(job).describe()
    with pytest.raises(J.JobError, match="offset must be"):
        J.parse_offset("dark")


def test_contrast_limits_for_photo_decisions(checkpoint):
    for data, expected in ((np.zeros((4, 4), np.uint8), (0.0, 255.0)),
                           (np.full((4, 4), 900, np.uint16), (0.0, 1023.0)),
                           (np.full((4, 4), 0.5, np.float32), (0.0, 1.0)),
                           (np.array([[2.0, 9.0], [3.0, 4.0]]), (2.0, 9.0))):
        job = J.Job(array=data, reference=None, rgb=False, lazy=False, weights=checkpoint)
        assert J.contrast_limits_for(J.preview_decision(job), (5.0, 6.0)) == expected


def test_execute_job_runs_reports_progress_and_cancels(checkpoint):
    data = np.full((64, 96), 40, np.uint8)
    job = J.Job(array=data, reference=None, rgb=False, lazy=False, weights=checkpoint, tile=32)
    calls = []
    out = J.execute_job(job, progress=lambda d, t: calls.append((d, t)))
    assert out.status == "ok", out.message
    assert out.data.shape == data.shape and out.data.dtype == np.uint8
    assert out.contrast_limits == (0.0, 255.0)
    assert calls and calls[-1][0] == calls[-1][1] == len(calls)

    cancel = threading.Event()
    out = J.execute_job(job, progress=lambda d, t: cancel.set(), cancel=cancel)
    assert out.status == "cancelled" and out.data is None

    bad = J.Job(array=data, reference=None, rgb=False, lazy=False,
                weights=checkpoint.with_name("missing.pt"))
    out = J.execute_job(bad)
    assert out.status == "error" and "not found" in out.message


def test_execute_job_lazy_returns_dask(checkpoint):
    da = pytest.importorskip("dask.array")
    data = da.from_array(np.full((2, 40, 40), 1000, np.uint16), chunks=(1, 40, 40))
    job = J.Job(array=data, reference=None, rgb=False, lazy=True, weights=checkpoint, tile=64)
    out = J.execute_job(job)
    assert out.status == "ok", out.message
    assert J.is_dask(out.data) and out.data.shape == data.shape
    assert out.contrast_limits == (0.0, 1023.0)
    computed = np.asarray(out.data)
    assert computed.dtype == np.uint16 and computed.max() <= 1023


