"""napari widget: Qt-free helpers (no display) and GUI tests (``-m gui``, run under xvfb-run -a).

The model used here is random (``init_weights(seed=0)``, depth 2, width 8), not a
trained one: it brightens dark inputs, which is all these tests need.
"""

from __future__ import annotations

import threading
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("magicgui")

from msrnet_napari import _widget as W  # noqa: E402

# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small random-weights MSR-net checkpoint (needs torch only to write it)."""
    pytest.importorskip("torch")
    from msrnet_napari.config import MSRNetConfig
    from msrnet_napari.model import MSRNet, init_weights, save_checkpoint

    model = init_weights(MSRNet(MSRNetConfig(depth=2, width=8, exposure_target=0.4)), seed=0)
    return save_checkpoint(model, tmp_path_factory.mktemp("weights") / "random.pt")


@pytest.fixture
def dark_rgb() -> np.ndarray:
    pytest.importorskip("skimage")
    from msrnet_napari._sample_data import dark_photo

    return np.ascontiguousarray(dark_photo()[0][0][96:192, 160:288])  # 96 x 128 x 3 uint8


@pytest.fixture
def dim_stack() -> np.ndarray:
    """(3, 48, 64) uint16: a crop of the dim 12-bit time-lapse sample."""
    pytest.importorskip("skimage")
    from msrnet_napari._sample_data import dim_fluorescence_timelapse

    return np.ascontiguousarray(dim_fluorescence_timelapse(frames=3)[0][0][:, :48, :64])


def _plugin_installed() -> bool:
    eps = metadata.entry_points()
    group = eps.select(group="napari.manifest") if hasattr(eps, "select") else eps.get(
        "napari.manifest", [])
    return any(ep.name == "msrnet-napari" for ep in group)


@pytest.fixture
def notes(monkeypatch):
    """Record show_error / show_info calls made by the widget."""
    log: dict[str, list[str]] = {"error": [], "info": []}
    monkeypatch.setattr(W, "show_error", lambda msg: log["error"].append(str(msg)))
    monkeypatch.setattr(W, "show_info", lambda msg: log["info"].append(str(msg)))
    return log


# ------------------------------------------------------- Qt-free helpers


def test_plan_job_2d_and_rgb_are_whole_images():
    gray = np.zeros((10, 12), np.uint8)
    arr, idx = W.plan_job(gray, False, (3, 4), whole_stack=False)
    assert arr.shape == (10, 12) and idx == (slice(None), slice(None))
    rgb = np.zeros((10, 12, 3), np.uint8)
    arr, idx = W.plan_job(rgb, True, (0, 0), whole_stack=False)
    assert arr.shape == (10, 12, 3) and len(idx) == 3


def test_plan_job_current_plane_keeps_dims_and_clips_step():
    stack = np.arange(4 * 5 * 6 * 7).reshape(4, 5, 6, 7)
    arr, idx = W.plan_job(stack, False, (2, 3, 0, 0), whole_stack=False)
    assert arr.shape == (1, 1, 6, 7)
    np.testing.assert_array_equal(arr[0, 0], stack[2, 3])
    assert W.plane_offset(idx, rgb=False) == (2, 3, 0, 0)
    arr, idx = W.plan_job(stack, False, (99, -5, 0, 0), whole_stack=False)
    np.testing.assert_array_equal(arr[0, 0], stack[3, 0])
    arr, idx = W.plan_job(stack, False, (2, 3, 0, 0), whole_stack=True)
    assert arr.shape == stack.shape and W.plane_offset(idx, False) == (0, 0, 0, 0)


def test_plan_job_rgb_stack_and_multiscale():
    rgb_stack = np.zeros((3, 8, 9, 3), np.uint8)
    rgb_stack[1] = 7
    arr, idx = W.plan_job(rgb_stack, True, (1, 0, 0), whole_stack=False)
    assert arr.shape == (1, 8, 9, 3) and arr.max() == 7
    assert W.plane_offset(idx, rgb=True) == (1, 0, 0)
    pyramid = [np.ones((2, 16, 16), np.uint8), np.ones((2, 8, 8), np.uint8)]
    arr, _ = W.plan_job(pyramid, False, (1, 0, 0), whole_stack=False, multiscale=True)
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
    with pytest.raises(W.JobError, match=match):
        W.plan_job(data, rgb, (0, 0), whole_stack=False)


def test_plan_job_dask_stays_lazy():
    da = pytest.importorskip("dask.array")
    stack = da.zeros((6, 32, 32), dtype=np.uint8, chunks=(1, 32, 32))
    arr, _ = W.plan_job(stack, False, (4, 0, 0), whole_stack=False)
    assert W.is_dask(arr) and arr.shape == (1, 32, 32)
    assert not W.should_stay_lazy(arr, whole_stack=False)
    assert not W.should_stay_lazy(stack, whole_stack=True)  # small: computed
    assert W.should_stay_lazy(stack, whole_stack=True, threshold_bytes=1000)
    assert not W.should_stay_lazy(np.zeros((6, 32, 32)), whole_stack=True, threshold_bytes=0)


def test_choose_scaling_kwargs():
    assert W.choose_scaling_kwargs(np.zeros((4, 4), np.uint8)) == {"bit_depth": 8}
    assert W.choose_scaling_kwargs(np.full((4, 4), 4000, np.uint16)) == {"bit_depth": 12}
    assert W.choose_scaling_kwargs(np.full((4, 4), 5000, np.uint16)) == {"bit_depth": 14}
    assert W.choose_scaling_kwargs(np.linspace(0, 1, 16, dtype=np.float32)) == {
        "intensity_range": (0.0, 1.0)}
    assert W.choose_scaling_kwargs(np.array([2.0, 10.0])) == {"intensity_range": (2.0, 10.0)}
    with pytest.raises(W.JobError, match="NaN"):
        W.choose_scaling_kwargs(np.array([0.1, np.nan]))
    with pytest.raises(W.JobError, match="negative"):
        W.choose_scaling_kwargs(np.array([-3, 5], np.int16))
    with pytest.raises(W.JobError, match="constant"):
        W.choose_scaling_kwargs(np.full(4, 5.0))


def test_choose_scaling_kwargs_explicit_bit_depth():
    dim_12bit = np.full((4, 4), 445, np.uint16)  # a dim 12-bit image: detection says 10-bit
    assert W.choose_scaling_kwargs(dim_12bit) == {"bit_depth": 10}
    assert W.choose_scaling_kwargs(dim_12bit, bit_depth=12) == {"bit_depth": 12}
    with pytest.raises(W.JobError, match="do not fit the chosen 8-bit"):
        W.choose_scaling_kwargs(dim_12bit, bit_depth=8)


def test_choose_scaling_kwargs_dask():
    da = pytest.importorskip("dask.array")
    arr = da.from_array(np.array([[0, 4095]], np.uint16), chunks=1)
    assert W.choose_scaling_kwargs(arr) == {"bit_depth": 12}


def test_output_contrast_limits():
    assert W.output_contrast_limits(np.uint8) == (0.0, 255.0)
    assert W.output_contrast_limits(np.uint16, bit_depth=12) == (0.0, 4095.0)
    assert W.output_contrast_limits(np.uint16, np.array([0, 900])) == (0.0, 1023.0)
    assert W.output_contrast_limits(np.uint16) == (0.0, 65535.0)
    assert W.output_contrast_limits(np.float32, np.array([0.2, 0.9])) == (0.0, 1.0)
    assert W.output_contrast_limits(np.float32, intensity_range=(2.0, 9.0)) == (2.0, 9.0)
    lo, hi = W.output_contrast_limits(np.float64, np.linspace(-5, 5, 1001))
    assert -5 < lo < -4.8 and 4.8 < hi < 5
    assert W.output_contrast_limits(np.float32) == (0.0, 1.0)


def test_execute_job_runs_reports_progress_and_cancels(checkpoint):
    data = np.full((64, 96), 40, np.uint8)
    job = W.Job(array=data, reference=None, rgb=False, lazy=False, weights=checkpoint, tile=32)
    calls = []
    out = W.execute_job(job, progress=lambda d, t: calls.append((d, t)))
    assert out.status == "ok", out.message
    assert out.data.shape == data.shape and out.data.dtype == np.uint8
    assert out.contrast_limits == (0.0, 255.0)
    assert calls and calls[-1][0] == calls[-1][1] == len(calls)

    cancel = threading.Event()
    out = W.execute_job(job, progress=lambda d, t: cancel.set(), cancel=cancel)
    assert out.status == "cancelled" and out.data is None

    bad = W.Job(array=data, reference=None, rgb=False, lazy=False,
                weights=checkpoint.with_name("missing.pt"))
    out = W.execute_job(bad)
    assert out.status == "error" and "not found" in out.message


def test_execute_job_lazy_returns_dask(checkpoint):
    da = pytest.importorskip("dask.array")
    data = da.from_array(np.full((2, 40, 40), 1000, np.uint16), chunks=(1, 40, 40))
    job = W.Job(array=data, reference=None, rgb=False, lazy=True, weights=checkpoint, tile=64)
    out = W.execute_job(job)
    assert out.status == "ok", out.message
    assert W.is_dask(out.data) and out.data.shape == data.shape
    assert out.contrast_limits == (0.0, 1023.0)
    computed = np.asarray(out.data)
    assert computed.dtype == np.uint16 and computed.max() <= 1023


# --------------------------------------------------------------- GUI tests


def _open_widget(viewer) -> W.MSRNetWidget:
    if _plugin_installed():
        _, widget = viewer.window.add_plugin_dock_widget("msrnet-napari", "MSR-net enhance")
    else:
        widget = W.MSRNetWidget(viewer)
        viewer.window.add_dock_widget(widget, name="MSR-net enhance")
    assert isinstance(widget, W.MSRNetWidget)
    return widget


def _use_checkpoint(widget, path) -> None:
    widget.weights.value = W.CHECKPOINT_WEIGHTS
    widget.checkpoint.value = path
    assert widget.checkpoint.enabled


def _wait(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.is_running, timeout=timeout)


@pytest.mark.gui
def test_widget_enhances_rgb_layer(make_napari_viewer, qtbot, checkpoint, dark_rgb, notes):
    viewer = make_napari_viewer()
    layer = viewer.add_image(dark_rgb, name="dark", rgb=True, scale=(0.5, 0.5),
                             translate=(3, 4))
    widget = _open_widget(viewer)
    assert widget.image_layer.value is layer
    assert not widget.whole_stack.enabled  # 2D: nothing to choose
    assert widget.device.choices[:2] == ("auto", "cpu")
    _use_checkpoint(widget, checkpoint)
    widget.tile.value = 32

    seen = []
    widget._relay.progressed.connect(lambda d, t: seen.append((d, t)))
    widget.run_button.native.click()
    assert widget.is_running and widget.cancel_button.enabled and not widget.run_button.enabled
    _wait(qtbot, widget)

    assert notes["error"] == [] and notes["info"] == []
    out = viewer.layers["dark (MSR-net)"]
    assert out.data.shape == dark_rgb.shape and out.data.dtype == np.uint8
    assert out.rgb
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    assert out.data.mean() > dark_rgb.mean() + 10
    assert tuple(out.contrast_limits) == (0, 255)
    assert out.metadata["msrnet"]["source"] == "dark"
    # 96 x 128 in 32-px tiles = 12 tiles, reported one by one
    assert seen and seen[-1] == (12, 12) and len(seen) == 12
    assert widget.progress.value == widget.progress.max == 12
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.image_layer.value is layer  # selection kept after the new layer arrived


@pytest.mark.gui
def test_widget_bit_depth_choice(make_napari_viewer, qtbot, checkpoint, notes):
    viewer = make_napari_viewer()
    dim = (np.random.default_rng(1).random((40, 50)) * 445).astype(np.uint16)  # dim 12-bit
    layer = viewer.add_image(dim, name="dim")
    widget = _open_widget(viewer)
    _use_checkpoint(widget, checkpoint)
    assert widget.tile.value == 0 and widget.build_job(layer).tile is None  # auto per device
    widget.tile.value = 48
    assert widget.build_job(layer).tile == 48
    results = {}
    for choice in (0, 12):
        widget.bit_depth.value = choice
        widget.run()
        _wait(qtbot, widget)
        assert notes["error"] == []
        out = viewer.layers.pop(-1)
        results[choice] = out
    assert tuple(results[0].contrast_limits) == (0, 1023)  # auto: looks like 10-bit data
    assert tuple(results[12].contrast_limits) == (0, 4095)
    assert results[12].data.max() <= 4095
    assert not np.array_equal(results[0].data, results[12].data)


@pytest.mark.gui
def test_widget_layer_list_follows_viewer(make_napari_viewer, checkpoint):
    viewer = make_napari_viewer()
    widget = _open_widget(viewer)
    assert widget.image_layer.choices == ()
    a = viewer.add_image(np.zeros((8, 8), np.uint8), name="a")
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="labels")
    b = viewer.add_image(np.zeros((2, 8, 8), np.uint8), name="b")
    assert widget.image_layer.choices == (a, b)  # Labels are not offered
    widget.image_layer.value = b
    assert widget.whole_stack.enabled
    b.name = "renamed"
    assert [widget.image_layer.native.itemText(i) for i in range(2)] == ["a", "renamed"]
    viewer.layers.remove(b)
    assert widget.image_layer.choices == (a,)
    assert not widget.whole_stack.enabled


@pytest.mark.gui
def test_widget_stack_current_plane_and_whole(make_napari_viewer, qtbot, checkpoint,
                                              dim_stack, notes):
    viewer = make_napari_viewer()
    layer = viewer.add_image(dim_stack, name="stack", scale=(2.0, 1.0, 1.0))
    widget = _open_widget(viewer)
    _use_checkpoint(widget, checkpoint)
    viewer.dims.set_current_step(0, 1)  # world step 1 -> data plane 1

    widget.run()
    _wait(qtbot, widget)
    plane = viewer.layers["stack (MSR-net)"]
    assert plane.data.shape == (1, 48, 64) and plane.data.dtype == np.uint16
    np.testing.assert_allclose(plane.scale, (2.0, 1.0, 1.0))
    np.testing.assert_allclose(plane.translate, (2.0, 0.0, 0.0))  # sits at plane 1
    # the whole layer decides the scaling: its maximum gives the bit depth
    bits = next(b for b in (8, 10, 12, 14, 16) if dim_stack.max() < 2**b)
    assert tuple(plane.contrast_limits) == (0, 2**bits - 1)
    assert plane.metadata["msrnet"]["plane"] == [1]

    widget.whole_stack.value = True
    widget.run()
    _wait(qtbot, widget)
    whole = viewer.layers["stack (MSR-net) [1]"]
    assert whole.data.shape == dim_stack.shape
    np.testing.assert_allclose(whole.translate, (0.0, 0.0, 0.0))
    # the plane run and the whole-stack run agree on that plane (same scaling)
    np.testing.assert_array_equal(whole.data[1], plane.data[0])
    assert notes["error"] == []


@pytest.mark.gui
def test_widget_dask_layer(make_napari_viewer, qtbot, checkpoint, monkeypatch, notes):
    da = pytest.importorskip("dask.array")
    data = da.from_array(np.full((4, 40, 40), 30, np.uint8), chunks=(1, 40, 40))
    viewer = make_napari_viewer()
    viewer.add_image(data, name="lazy")
    widget = _open_widget(viewer)
    _use_checkpoint(widget, checkpoint)
    widget.run()  # current plane: computed
    _wait(qtbot, widget)
    out = viewer.layers["lazy (MSR-net)"]
    assert isinstance(out.data, np.ndarray) and out.data.shape == (1, 40, 40)

    monkeypatch.setattr(W, "LAZY_THRESHOLD_BYTES", 0)
    widget.whole_stack.value = True
    widget.run()  # whole stack of a "large" dask array: stays lazy
    _wait(qtbot, widget)
    lazy = viewer.layers["lazy (MSR-net) [1]"]
    assert W.is_dask(lazy.data) and lazy.data.shape == (4, 40, 40)
    assert lazy.metadata["msrnet"]["lazy"] is True
    assert notes["error"] == []


@pytest.mark.gui
def test_widget_cancel(make_napari_viewer, qtbot, checkpoint, notes):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    viewer.add_image(np.full((512, 512), 20, np.uint8), name="big")
    widget = _open_widget(viewer)
    _use_checkpoint(widget, checkpoint)
    widget.tile.value = 32  # 256 tiles

    first_tile = threading.Event()
    clicked = threading.Event()

    def hold_first_tile(done, total):  # runs in the worker thread (direct connection)
        if not first_tile.is_set():
            first_tile.set()
            clicked.wait(30)  # keep the job mid-run until Cancel was pressed

    widget._relay.progressed.connect(hold_first_tile, type=Qt.DirectConnection)
    widget.run()
    qtbot.waitUntil(first_tile.is_set, timeout=30_000)
    assert widget.cancel_button.enabled
    widget.cancel_button.native.click()
    clicked.set()
    _wait(qtbot, widget)

    assert [layer.name for layer in viewer.layers] == ["big"]
    assert notes["info"] == ["MSR-net: cancelled"] and notes["error"] == []
    assert widget.run_button.enabled


@pytest.mark.gui
def test_widget_errors_are_notifications(make_napari_viewer, qtbot, checkpoint, notes,
                                         monkeypatch, tmp_path):
    viewer = make_napari_viewer()
    widget = _open_widget(viewer)

    widget.run()  # nothing to enhance
    assert "no Image layer" in notes["error"][-1]

    labels = viewer.add_labels(np.zeros((8, 8), np.uint8), name="labels")
    with pytest.raises(W.JobError, match="Labels layer"):
        widget.build_job(labels)

    nan = np.full((16, 16), 0.1, np.float32)
    nan[3, 3] = np.nan
    viewer.add_image(nan, name="nan")
    _use_checkpoint(widget, checkpoint)
    widget.run()  # the range check runs in the worker thread
    _wait(qtbot, widget)
    assert "NaN" in notes["error"][-1]

    viewer.add_image(np.full((16, 16), 5, np.uint8), name="ok")
    widget.checkpoint.value = tmp_path / "nope.pt"
    widget.run()
    assert "checkpoint file not found" in notes["error"][-1]

    # missing bundled weights: the engine's FileNotFoundError arrives from the worker
    import msrnet_napari.weights as weights_module

    monkeypatch.setattr(weights_module, "_WEIGHTS_DIR", tmp_path / "empty")
    widget.weights.value = W.DEFAULT_WEIGHTS
    widget.image_layer.value = viewer.layers["ok"]
    widget.run()
    _wait(qtbot, widget)
    assert "weights not found" in notes["error"][-1]
    assert [layer.name for layer in viewer.layers] == ["labels", "nan", "ok"]
    assert len(notes["error"]) == 4 and notes["info"] == []


@pytest.mark.gui
@pytest.mark.skipif(not _plugin_installed(), reason="plugin not installed (no entry point)")
def test_plugin_samples_open(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("msrnet-napari", "dark_photo")
    viewer.open_sample("msrnet-napari", "dim_fluorescence")
    assert viewer.layers[0].rgb and viewer.layers[0].data.dtype == np.uint8
    assert viewer.layers[1].data.dtype == np.uint16
