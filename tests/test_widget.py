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
from msrnet_napari import widget_jobs as J  # noqa: E402

# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small random-weights MSR-net checkpoint (needs torch only to write it)."""
    pytest.importorskip("torch")
    from msrnet_napari.config import MSRNetConfig
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

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
    widget.model.value = J.MODEL_CHECKPOINT
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

    monkeypatch.setattr(J, "LAZY_THRESHOLD_BYTES", 0)
    widget.whole_stack.value = True
    widget.run()  # whole stack of a "large" dask array: stays lazy
    _wait(qtbot, widget)
    lazy = viewer.layers["lazy (MSR-net) [1]"]
    assert J.is_dask(lazy.data) and lazy.data.shape == (4, 40, 40)
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
    with pytest.raises(J.JobError, match="Labels layer"):
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
    import msrnet_napari.models as models_module

    monkeypatch.setattr(models_module, "_WEIGHTS_DIR", tmp_path / "empty")
    widget.model.value = "photo"
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
    viewer.open_sample("msrnet-napari", "u2os_cells")
    assert [layer.data.dtype for layer in viewer.layers[2:]] == [np.uint16] * 3


@pytest.mark.gui
def test_widget_microscopy_model_offset_gain_and_preview(make_napari_viewer, qtbot, notes):
    from msrnet_napari import available_models

    if "microscopy" not in available_models():
        pytest.skip("bundled microscopy model not installed")
    rng = np.random.default_rng(2)
    data = (100 + 2 * rng.poisson(3.0, (64, 80))).astype(np.uint16)
    data[20:30, 20:30] += 300
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="cells", contrast_limits=(90, 450))
    widget = _open_widget(viewer)
    widget.model.value = "auto"
    assert "model microscopy" in widget.preview()  # gray 16-bit: the linear model by default
    widget.model.value = "microscopy"
    widget.offset.value = "100"
    widget.gain.value = 2.0
    text = widget.preview()
    assert "dark 100 (given)" in text and "gain 2" in text and widget.decision.value == text

    widget.run()
    assert all(not widget[n].enabled for n in ("bit_depth", "offset", "gain", "model"))
    _wait(qtbot, widget)
    assert notes["error"] == []
    out = viewer.layers["cells (MSR-net)"]
    assert tuple(out.contrast_limits) == tuple(layer.contrast_limits)  # same display as input
    assert out.metadata["msrnet"]["model"] == "microscopy"
    assert "microscopy model" in widget.status.value
    inside = out.data[22:28, 22:28].astype(float).mean() - 100
    assert 1.6 * 300 < inside < 2.4 * (300 + 6)  # the signal above the offset, doubled
    assert widget.bit_depth.enabled and widget.offset.enabled

    widget.offset.value = "dark"
    widget.run()
    assert "offset must be" in notes["error"][-1]
    assert widget.status.value.startswith("invalid settings")
