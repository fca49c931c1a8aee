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


def test_plan_job_dask_slices_stay_lazy_and_run_modes():
    da = pytest.importorskip("dask.array")
    stack = da.zeros((6, 32, 32), dtype=np.uint8, chunks=(1, 32, 32))
    arr, _ = J.plan_job(stack, "planes", (4, 0, 0), whole_stack=False)
    assert J.is_dask(arr) and arr.shape == (1, 32, 32)
    assert J.run_mode(arr, "planes", whole_stack=False) == "array"
    assert J.run_mode(stack, "planes", whole_stack=True) == "planes"  # dask: always by plane
    assert J.run_mode(stack[:1], "planes", whole_stack=True) == "array"  # a single plane
    big = np.zeros((6, 32, 32), np.uint8)
    assert J.run_mode(big, "planes", whole_stack=True) == "array"  # small numpy: one shot
    assert J.run_mode(big, "planes", whole_stack=True, threshold_bytes=1000) == "planes"
    assert J.run_mode(np.zeros((32, 32, 3), np.uint8), "rgb", whole_stack=True) == "array"


def test_widget_asks_the_core_for_the_photo_scaling(checkpoint):
    """What the widget used to decide itself now comes from scaling_for (photo model)."""
    def scaling(data, bit_depth=0):
        job = J.Job(array=data, reference=None, weights=checkpoint,
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
    from msrnet_napari.config import MSRNetConfig

    from conftest import random_weights

    ckpt = random_weights(MSRNetConfig(log_bases=(1e-4,), depth=2, width=4, intensity="linear"),
                          identity=True)
    data = np.random.default_rng(0).poisson(5, (64, 64)).astype(np.uint16) + 100
    job = J.Job(array=data, reference=None, weights=ckpt,
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


def _starved(shape=(96, 90), photons=4.0, seed=0):
    """A few photons per pixel over a dark level of 100: the core bins it 2 x 2 (auto)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    clean = np.exp(-((yy - shape[0] / 3) ** 2 + (xx - shape[1] / 2) ** 2) / 72.0)
    counts = rng.poisson(photons * clean) + rng.normal(0, 1.5, shape)
    return np.clip(np.rint(100 + counts), 0, 65535).astype(np.uint16)


def test_binning_choice_goes_to_the_linear_model_only():
    from msrnet_napari.config import MSRNetConfig

    from conftest import random_weights

    assert [v for _, v in J.binning_choices()] == ["auto", "1", "2", "3", "4"]
    assert J.parse_binning("auto") == J.parse_binning("") == J.parse_binning(None) == "auto"
    assert J.parse_binning("3") == 3 and J.parse_binning(2) == 2
    job = J.Job(array=_starved())
    assert job.binning == "auto" and job.decision_options("linear")["binning"] == "auto"
    job.binning = "1"
    assert job.decision_options("linear") == {"offset": None, "gain": 1.0, "binning": 1}
    assert "binning" not in job.decision_options("photo")  # the photo model takes none

    # the core decides: auto bins the photon-starved layer, 1 keeps the full resolution
    ckpt = random_weights(MSRNetConfig(log_bases=(1e-4,), depth=2, width=4, intensity="linear"),
                          identity=True)
    job = J.Job(array=_starved(), weights=ckpt)
    decision = J.preview_decision(job)
    assert decision.max_binning == 2 and "binning 2x2" in decision.describe()
    job.binning = "1"
    assert J.preview_decision(job).max_binning == 1
    job.binning = "3"
    assert "binning 3x3" in J.preview_decision(job).describe()
    job.binning = "9"  # not offered by the menu; refused by the core, as a message
    with pytest.raises(J.JobError, match="binning must be"):
        J.preview_decision(job)
    # a photo checkpoint never sees the choice, whatever it is
    photo = J.Job(array=np.zeros((16, 16, 3), np.uint8), layout="rgb",
                  weights=random_weights(MSRNetConfig(depth=2, width=4)), binning="2")
    assert J.preview_decision(photo).photo is not None


def test_contrast_limits_for_photo_decisions(checkpoint):
    for data, expected in ((np.zeros((4, 4), np.uint8), (0.0, 255.0)),
                           (np.full((4, 4), 900, np.uint16), (0.0, 1023.0)),
                           (np.full((4, 4), 0.5, np.float32), (0.0, 1.0)),
                           (np.array([[2.0, 9.0], [3.0, 4.0]]), (2.0, 9.0))):
        job = J.Job(array=data, reference=None, weights=checkpoint)
        assert J.contrast_limits_for(J.preview_decision(job), (5.0, 6.0)) == expected


def test_execute_job_runs_reports_progress_and_cancels(checkpoint):
    data = np.full((64, 96), 40, np.uint8)
    job = J.Job(array=data, reference=None, weights=checkpoint, tile=32)
    calls = []
    out = J.execute_job(job, progress=lambda d, t: calls.append((d, t)))
    assert out.status == "ok", out.message
    assert out.data.shape == data.shape and out.data.dtype == np.uint8
    assert out.contrast_limits == (0.0, 255.0)
    assert calls and calls[-1][0] == calls[-1][1] == len(calls)

    cancel = threading.Event()
    out = J.execute_job(job, progress=lambda d, t: cancel.set(), cancel=cancel)
    assert out.status == "cancelled" and out.data is None

    bad = J.Job(array=data, reference=None,
                weights=checkpoint.with_name("missing.pt"))
    out = J.execute_job(bad)
    assert out.status == "error" and "not found" in out.message


def test_job_precision_goes_to_enhance(checkpoint, monkeypatch):
    """The widget's GPU precision reaches enhance(); on the CPU engine tf32 computes fp32
    (the same bits), and a value enhance() refuses ends the job with its message."""
    data = (np.random.default_rng(2).random((40, 56)) * 120).astype(np.uint8)
    import msrnet_napari

    seen = []
    real = msrnet_napari.enhance

    def spy(array, **kwargs):
        seen.append(kwargs.get("precision"))
        return real(array, **kwargs)

    monkeypatch.setattr(msrnet_napari, "enhance", spy)
    fp32 = J.execute_job(J.Job(array=data, weights=checkpoint, device="cpu"))
    tf32 = J.execute_job(J.Job(array=data, weights=checkpoint, device="cpu", precision="tf32"))
    assert fp32.status == tf32.status == "ok" and seen == ["fp32", "tf32"]
    np.testing.assert_array_equal(fp32.data, tf32.data)
    bad = J.execute_job(J.Job(array=data, weights=checkpoint, precision="fp16"))
    assert bad.status == "error" and "precision" in bad.message


# ------------------------------------------------------------------ plane-by-plane jobs


def _events(job, **kwargs):
    events = []
    out = J.execute_job(job, on_event=events.append, **kwargs)
    return out, events


def test_planes_mode_equals_one_shot_and_goes_plane_by_plane(checkpoint):
    data = (np.random.default_rng(0).random((4, 40, 48)) * 900).astype(np.uint16)
    oneshot = J.execute_job(J.Job(array=data, weights=checkpoint, tile=32))
    assert oneshot.status == "ok", oneshot.message
    job = J.Job(array=data, weights=checkpoint, tile=32, mode="planes", first_plane=(2,))
    progress = []
    out, events = _events(job, progress=lambda d, t: progress.append((d, t)))
    assert out.status == "ok" and out.planes_done == out.planes_total == 4
    assert isinstance(events[0], J.Decided)
    assert events[0].contrast_limits == oneshot.contrast_limits == out.contrast_limits
    planes = [e for e in events if isinstance(e, J.PlaneDone)]
    assert [e.index[0].start for e in planes] == [2, 3, 0, 1]  # the plane on screen first
    assert [e.done for e in planes] == [1, 2, 3, 4] and planes[0].data.shape == (1, 40, 48)
    np.testing.assert_array_equal(out.data, oneshot.data)  # one decision for the whole stack
    # whole-job tile progress: 2 x 2 tiles per plane, 16 in all, monotonic
    assert progress[-1] == (16, 16) and [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_planes_mode_dask_reads_by_chunk_and_matches_numpy(checkpoint, monkeypatch):
    da = pytest.importorskip("dask.array")
    data = (np.random.default_rng(1).random((2, 3, 32, 40)) * 200).astype(np.uint8)
    lazy = da.from_array(data, chunks=(1, 2, 32, 40))
    reads = []
    original = J._compute
    monkeypatch.setattr(J, "_compute", lambda a, t: reads.append(a.shape) or original(a, t))
    job = J.Job(array=lazy, weights=checkpoint, mode="planes", first_plane=(1, 2))
    out, events = _events(job)
    assert out.status == "ok", out.message
    block_reads = list(reads)
    ref = J.execute_job(J.Job(array=data, weights=checkpoint))
    np.testing.assert_array_equal(out.data, ref.data)
    order = [tuple(s.start for s in e.index) for e in events if isinstance(e, J.PlaneDone)]
    assert order[0] == (1, 2) and sorted(order) == list(np.ndindex(2, 3))
    # one read per chunk of planes (2 + 1 planes per stack row), the on-screen chunk first,
    # then the others in order
    assert block_reads == [(1, 1, 32, 40), (1, 2, 32, 40), (1, 1, 32, 40), (1, 2, 32, 40)]
    monkeypatch.setattr(J, "BLOCK_READ_BYTES", 1)  # big chunks: one plane at a time
    reads.clear()
    J.execute_job(job)
    assert reads == [(1, 1, 32, 40)] * 6


def test_planes_mode_rgb_and_channels_last(checkpoint):
    rgb = (np.random.default_rng(2).random((3, 24, 32, 3)) * 60).astype(np.uint8)
    out = J.execute_job(J.Job(array=rgb, layout="rgb", weights=checkpoint, mode="planes"))
    ref = J.execute_job(J.Job(array=rgb, layout="rgb", weights=checkpoint))
    assert out.status == ref.status == "ok"
    np.testing.assert_array_equal(out.data, ref.data)
    chans = (np.random.default_rng(3).random((3, 24, 32, 2)) * 900).astype(np.uint16)
    job = J.Job(array=chans, layout="channels-last", weights=checkpoint, mode="planes")
    assert job.n_planes == 3 and job.layout_options()["channel_axis"] == -1
    out = J.execute_job(job)
    from msrnet_napari import enhance

    np.testing.assert_array_equal(out.data, enhance(chans, weights=checkpoint, channel_axis=-1))


def test_planes_mode_cancel_keeps_count(checkpoint):
    data = np.full((5, 32, 32), 30, np.uint8)
    job = J.Job(array=data, weights=checkpoint, tile=16, mode="planes")
    cancel = threading.Event()

    def on_event(event):
        if isinstance(event, J.PlaneDone) and event.done == 2:
            cancel.set()

    out = J.execute_job(job, cancel=cancel, on_event=on_event)
    assert out.status == "cancelled" and (out.planes_done, out.planes_total) == (2, 5)
    assert "2 of 5 planes" in out.message
    assert out.data[:2].any() and not out.data[2:].any()


def test_result_size_limit(monkeypatch):
    monkeypatch.setattr(J, "MAX_RESULT_BYTES", 1000)
    J.check_result_size((10, 100), np.uint8)
    with pytest.raises(J.JobError, match="msrnet-enhance"):
        J.check_result_size((10, 100), np.uint16)
    monkeypatch.setattr(J, "MAX_RESULT_BYTES", None)
    assert J.result_limit_bytes() >= 2**28  # half the physical memory (or 8 GiB)


# ------------------------------------------------------------------ layout and threads


def test_choose_layout_auto_explicit_and_refusals():
    kind, reason = J.choose_layout("auto", (395, 695, 3), np.uint16)
    assert kind == "channels-last" and reason.startswith("auto: ")
    assert J.choose_layout("auto", (395, 695, 3), np.uint16, "photo")[0] == "rgb"
    assert J.choose_layout("rgb", (395, 695, 3), np.uint16) == ("rgb", "RGB (chosen)")
    assert J.choose_layout("planes", (5, 395, 695), np.uint16)[0] == "planes"
    with pytest.raises(J.JobError, match="only 2 pixels wide"):
        J.choose_layout("planes", (395, 695, 2), np.uint16)
    with pytest.raises(J.JobError, match="last axis of 3 or 4"):
        J.choose_layout("rgb", (395, 695, 2), np.uint16)
    with pytest.raises(J.JobError, match=r"\(Y, X, C\)"):
        J.choose_layout("channels-last", (395, 695), np.uint16)


def test_plan_job_channels_last_keeps_the_channel_axis():
    stack = np.zeros((4, 10, 12, 2), np.uint16)
    arr, idx = J.plan_job(stack, "channels-last", (3, 0, 0, 0), whole_stack=False)
    assert arr.shape == (1, 10, 12, 2) and J.plane_offset(idx, rgb=False) == (3, 0, 0, 0)
    assert J.spatial_ndim("channels-last") == J.spatial_ndim(True) == 3
    assert J.spatial_ndim("planes") == J.spatial_ndim(False) == 2


def test_threads_auto_leaves_a_core():
    assert [J.auto_threads(n) for n in (1, 2, 4, 16)] == [1, 1, 3, 15]
    assert J.resolve_threads(0, cores=16) == 15 and J.resolve_threads(16, cores=16) == 16


# ------------------------------------------------------------------ settings


def test_settings_round_trip_and_validation(tmp_path, monkeypatch):
    monkeypatch.setenv(J.SETTINGS_ENV, str(tmp_path / "cfg"))
    assert J.settings_path() == tmp_path / "cfg" / J.SETTINGS_FILE
    assert J.load_settings() == J.DEFAULT_SETTINGS  # nothing saved yet
    changed = {**J.DEFAULT_SETTINGS, "tile": 64, "gain": 2.5, "layout": "rgb",
               "whole_stack": True, "unknown": 1}
    J.save_settings(changed)
    loaded = J.load_settings()
    assert loaded == {k: changed[k] for k in J.DEFAULT_SETTINGS}
    J.settings_path().write_text('{"tile": "big", "gain": NaN, "whole_stack": 1, "threads": 2.0}')
    assert J.load_settings() == {**J.DEFAULT_SETTINGS, "threads": 2}
    J.save_settings({**J.DEFAULT_SETTINGS, "binning": "2"})
    assert J.load_settings()["binning"] == "2"
    for bad in ('"9"', "2", '"off"'):  # not a menu value: the default (auto) is kept
        J.settings_path().write_text('{"binning": %s}' % bad)
        assert J.load_settings() == J.DEFAULT_SETTINGS
    assert J.DEFAULT_SETTINGS["binning"] == "auto"
    J.save_settings({**J.DEFAULT_SETTINGS, "precision": "tf32"})
    assert J.load_settings()["precision"] == "tf32"
    J.settings_path().write_text('{"precision": "fp16"}')
    assert J.load_settings() == J.DEFAULT_SETTINGS and J.DEFAULT_SETTINGS["precision"] == "fp32"
    J.settings_path().write_text("[1, 2]")
    assert J.load_settings() == J.DEFAULT_SETTINGS
    assert J.reset_settings() == J.DEFAULT_SETTINGS and not J.settings_path().exists()
    J.reset_settings()  # twice: fine
