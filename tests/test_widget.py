"""napari widget: Qt-free helpers (no display) and GUI tests (``-m gui``, run under xvfb-run -a).

The model used here is random (``init_weights(seed=0)``, depth 2, width 8), not a
trained one: it brightens dark inputs, which is all these tests need.
"""

from __future__ import annotations

import os
import re
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


@pytest.fixture(autouse=True)
def settings_dir(tmp_path, monkeypatch) -> Path:
    """Every test gets its own settings folder (never the user's config)."""
    folder = tmp_path / "config"
    monkeypatch.setenv(J.SETTINGS_ENV, str(folder))
    return folder


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
    viewer.add_image(dim_stack, name="stack", scale=(2.0, 1.0, 1.0))
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
def test_widget_dask_layer(make_napari_viewer, qtbot, checkpoint, notes):
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

    viewer.dims.set_current_step(0, 2)
    widget.whole_stack.value = True
    job = widget.build_job()
    assert job.mode == "planes" and job.first_plane == (2,)
    widget.run()  # whole dask stack: a numpy layer there at once, filled plane by plane
    filled = viewer.layers["lazy (MSR-net) [1]"]
    assert isinstance(filled.data, np.ndarray) and filled.data.shape == (4, 40, 40)
    assert not filled.data.any() and widget.is_running
    _wait(qtbot, widget)
    assert notes["error"] == [] and notes["info"] == []
    assert viewer.layers[-1] is filled and isinstance(filled.data, np.ndarray)
    # every plane equals a run of the same (constant) plane on its own
    for i in range(4):
        np.testing.assert_array_equal(filled.data[i], out.data[0])
    meta = filled.metadata["msrnet"]
    assert meta["mode"] == "planes" and meta["complete"] and meta["planes_done"] == 4
    assert "filled" in widget.status.value and "4 planes" in widget.status.value


@pytest.mark.gui
def test_widget_fills_big_stack_plane_by_plane(make_napari_viewer, qtbot, checkpoint,
                                               dim_stack, notes, monkeypatch):
    """An in-memory stack over the threshold fills a layer that exists from the start;
    the plane on screen comes first; the result equals the one-shot run."""
    viewer = make_napari_viewer()
    viewer.add_image(dim_stack, name="stack")
    widget = _open_widget(viewer)
    _use_checkpoint(widget, checkpoint)
    widget.whole_stack.value = True
    widget.run()  # small: one shot
    _wait(qtbot, widget)
    oneshot = viewer.layers.pop(-1)

    monkeypatch.setattr(J, "FILL_THRESHOLD_BYTES", 0)
    viewer.dims.set_current_step(0, 1)
    order, statuses = [], []
    widget._relay.progressed.connect(lambda d, t: statuses.append(widget.status.value))
    on_yielded = widget._on_yielded

    def record(event):  # connected by run(), so no event is missed
        if isinstance(event, J.PlaneDone):
            order.append(event.index[0].start)
        on_yielded(event)

    widget._on_yielded = record
    widget.run()
    filled = viewer.layers["stack (MSR-net)"]
    assert filled.metadata["msrnet"]["mode"] == "planes"
    _wait(qtbot, widget)
    assert notes["error"] == []
    assert order == [1, 2, 0]  # the plane on screen first
    np.testing.assert_array_equal(filled.data, oneshot.data)
    assert tuple(filled.contrast_limits) == tuple(oneshot.contrast_limits)  # the decision's
    assert any(s.startswith("plane ") for s in statuses)
    assert widget.progress.value == widget.progress.max > 1


def _interrupted_fill(make_napari_viewer, qtbot, checkpoint, monkeypatch, planes, interrupt,
                      hold_at=None):
    """Fill a ``planes``-plane 64x64 uint8 "stack" whole-stack in tiles of 32 (4 per plane),
    from plane 0; the result layer is there at once. Once the run reaches tile ``hold_at``
    (None: the first), its worker thread waits while ``interrupt(viewer, widget)`` runs,
    then the run ends. Returns (viewer, widget)."""
    from qtpy.QtCore import Qt

    monkeypatch.setattr(J, "FILL_THRESHOLD_BYTES", 0)
    viewer = make_napari_viewer()
    viewer.add_image(np.full((planes, 64, 64), 20, np.uint8), name="stack")
    widget = _open_widget(viewer)
    _use_checkpoint(widget, checkpoint)
    widget.tile.value = 32
    widget.whole_stack.value = True
    viewer.dims.set_current_step(0, 0)  # napari starts in the middle of the stack
    reached = threading.Event()
    release = threading.Event()

    def hold(done, total):  # worker thread
        if (hold_at is None or done == hold_at) and not reached.is_set():
            reached.set()
            release.wait(30)

    widget._relay.progressed.connect(hold, type=Qt.DirectConnection)
    widget.run()
    assert "stack (MSR-net)" in viewer.layers  # there at once
    qtbot.waitUntil(reached.is_set, timeout=30_000)
    interrupt(viewer, widget)
    release.set()
    _wait(qtbot, widget)
    return viewer, widget


@pytest.mark.gui
def test_widget_cancel_keeps_finished_planes(make_napari_viewer, qtbot, checkpoint, notes,
                                             monkeypatch):
    # the worker stops mid-way through plane 3; the cancel button is clicked meanwhile
    viewer, widget = _interrupted_fill(
        make_napari_viewer, qtbot, checkpoint, monkeypatch, 5,
        lambda viewer, widget: widget.cancel_button.native.click(), hold_at=9)
    layer = viewer.layers["stack (MSR-net)"]  # kept, with the two finished planes
    assert layer.data[:2].mean() > 20 and not layer.data[2:].any()
    meta = layer.metadata["msrnet"]
    assert meta["planes_done"] == 2 and meta["complete"] is False
    assert widget.status.value.startswith("cancelled: 2 of 5 planes done")
    assert notes["info"] and "2 of 5 planes" in notes["info"][-1] and notes["error"] == []


@pytest.mark.gui
def test_widget_cancel_before_any_plane_leaves_no_layer(make_napari_viewer, qtbot, checkpoint,
                                                        notes, monkeypatch):
    viewer, widget = _interrupted_fill(make_napari_viewer, qtbot, checkpoint, monkeypatch, 3,
                                       lambda viewer, widget: widget.cancel())
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert widget.status.value.startswith("cancelled: 0 of 3")


@pytest.mark.gui
def test_widget_removing_the_result_layer_stops_the_fill(make_napari_viewer, qtbot, checkpoint,
                                                         notes, monkeypatch):
    viewer, widget = _interrupted_fill(
        make_napari_viewer, qtbot, checkpoint, monkeypatch, 6,
        lambda viewer, widget: viewer.layers.remove("stack (MSR-net)"))
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert widget.status.value == "cancelled: the result layer was removed"
    assert notes["error"] == []


@pytest.mark.gui
def test_widget_fill_error_before_any_plane(make_napari_viewer, qtbot, checkpoint, notes):
    da = pytest.importorskip("dask.array")
    data = np.full((3, 16, 16), 0.1, np.float32)
    data[2, 3, 3] = np.nan  # found by the decision's pass over the whole stack
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(data, chunks=(1, 16, 16)), name="nan")
    widget = _open_widget(viewer)
    _use_checkpoint(widget, checkpoint)
    widget.whole_stack.value = True
    widget.run()
    _wait(qtbot, widget)
    assert "NaN" in notes["error"][-1]
    assert [layer.name for layer in viewer.layers] == ["nan"]  # no empty layer left
    assert widget.status.value == "failed (see notification)"


@pytest.mark.gui
def test_widget_refuses_results_over_the_memory_limit(make_napari_viewer, qtbot, checkpoint,
                                                      notes, monkeypatch):
    monkeypatch.setattr(J, "MAX_RESULT_BYTES", 10_000)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 64, 64), np.uint8), name="stack")
    widget = _open_widget(viewer)
    _use_checkpoint(widget, checkpoint)
    widget.run()  # one plane (4 kB): fine
    _wait(qtbot, widget)
    widget.whole_stack.value = True
    widget.run()
    assert "msrnet-enhance" in notes["error"][-1] and "GB" in notes["error"][-1]
    assert not widget.is_running


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

    widget.offset.value = "5000"  # above every value of the layer: refused, with its range
    n_layers = len(viewer.layers)
    widget.preview()
    widget.run()
    _wait(qtbot, widget)
    assert any("not below the data" in e for e in notes["error"]), notes["error"]
    assert len(viewer.layers) == n_layers  # nothing written


@pytest.mark.gui
def test_widget_result_keeps_the_fits_header(make_napari_viewer, qtbot, notes, tmp_path):
    from msrnet_napari import available_models
    from msrnet_napari._writer import write_fits
    from msrnet_napari.image_files import read_image

    if "microscopy" not in available_models():
        pytest.skip("bundled microscopy model not installed")
    data = (100 + 2 * np.random.default_rng(4).poisson(3.0, (48, 56))).astype(np.int16)
    header = ["SIMPLE  =                    T", "BITPIX  =                   16",
              "CTYPE1  = 'RA---TAN'", "OBJECT  = 'M51     '"]
    viewer = make_napari_viewer()
    viewer.add_image(data, name="plate", metadata={"fits_header": header})
    widget = _open_widget(viewer)
    widget.model.value = "microscopy"
    widget.run()
    _wait(qtbot, widget)
    assert notes["error"] == []
    out = viewer.layers["plate (MSR-net)"]
    assert out.metadata["fits_header"] == header and "decision" in out.metadata["msrnet"]
    [path] = write_fits(str(tmp_path / "out.fits"), out.data, out.as_layer_data_tuple()[1])
    cards = [c.rstrip() for c in read_image(path)[1].info["fits"].cards]
    assert "OBJECT  = 'M51     '" in cards
    assert any("model microscopy" in c for c in cards if c.startswith("HISTORY"))


@pytest.mark.gui
def test_widget_binning_choice(make_napari_viewer, qtbot, notes):
    """The Binning menu passes the user's choice; the core decides what auto means."""
    from msrnet_napari import available_models, enhance

    if "microscopy" not in available_models():
        pytest.skip("bundled microscopy model not installed")
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:96, 0:90]
    clean = np.exp(-((yy - 32) ** 2 + (xx - 45) ** 2) / 72.0)  # a few photons per pixel
    data = np.clip(np.rint(100 + rng.poisson(4 * clean) + rng.normal(0, 1.5, clean.shape)),
                   0, None).astype(np.uint16)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="starved")
    widget = _open_widget(viewer)
    widget.model.value = "microscopy"
    assert widget.binning.value == "auto" and "few photons per pixel" in widget.binning.tooltip
    assert [widget.binning.native.itemText(i) for i in range(widget.binning.native.count())] \
        == ["auto", "1 (off)", "2", "3", "4"]
    assert re.search(r"binning 2x2 \(SNR [\d.]+\)", widget.preview())
    assert widget.build_job().decision_options("linear")["binning"] == "auto"
    widget.binning.value = "1"
    assert widget.build_job().decision_options("linear")["binning"] == 1
    assert "binning" not in widget.preview()
    assert widget.current_settings()["binning"] == "1"

    widget.binning.value = "auto"
    widget.run()
    assert not widget.binning.enabled  # locked while running, like the other settings
    _wait(qtbot, widget)
    assert notes["error"] == [] and widget.binning.enabled
    out = viewer.layers["starved (MSR-net)"]
    assert "binning 2x2" in out.metadata["msrnet"]["decision"]
    np.testing.assert_array_equal(out.data, enhance(data, model="microscopy", rgb=False))


# ------------------------------------------------------- threads, layout, settings


@pytest.mark.gui
def test_widget_default_threads_leave_a_core_free(make_napari_viewer, monkeypatch):
    """The engine never takes every core by default: the GUI thread keeps one
    (benchmarks/bench_widget_latency.py measures what that buys)."""
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    widget = _open_widget(viewer)
    cores = os.cpu_count() or 1
    assert widget.threads.value == 0 and widget.threads.choices[0] == 0
    assert "auto" in widget.threads.native.currentText()
    threads = widget.build_job(layer).threads
    assert threads == max(1, cores - 1) and threads >= 1
    if cores > 1:
        assert threads < cores
    widget.threads.value = cores  # all cores, when asked for
    assert widget.build_job(layer).threads == cores
    assert J.auto_threads(8) == 7 and J.auto_threads(1) == 1 and J.auto_threads(2) == 1
    assert J.resolve_threads(0, cores=4) == 3 and J.resolve_threads(2, cores=4) == 2


@pytest.mark.gui
def test_widget_layout_choice(make_napari_viewer, checkpoint, notes):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    composite = viewer.add_image((100 + rng.poisson(5, (40, 50, 3))).astype(np.uint16),
                                 name="composite", rgb=True)  # napari shows it as RGB
    two = viewer.add_image((100 + rng.poisson(5, (40, 50, 2))).astype(np.uint16), name="two")
    photo = viewer.add_image(np.zeros((40, 50, 3), np.uint8), name="photo")
    widget = _open_widget(viewer)
    combo = widget.layout_mode

    widget.image_layer.value = composite
    assert combo.value == "auto" and combo.native.itemText(0) == "auto: channels (last axis)"
    assert "fluorescence composite" in combo.tooltip
    job = widget.build_job()
    assert job.layout == "channels-last" and job.layout_options() == {"rgb": False,
                                                                     "channel_axis": -1}
    assert job.layer_kwargs["metadata"]["msrnet"]["layout"] == "channels-last"
    combo.value = "rgb"
    assert widget.build_job().layout == "rgb"
    combo.value = "planes"  # 40 planes 3 px wide: refused, not guessed
    with pytest.raises(J.JobError, match="only 3 pixels wide"):
        widget.build_job()
    widget.run()
    assert "only 3 pixels wide" in notes["error"][-1]

    combo.value = "auto"
    widget.image_layer.value = two  # never 40 planes of (50, 2)
    assert combo.native.itemText(0) == "auto: channels (last axis)"
    assert "too short to be X" in combo.tooltip
    assert not widget.whole_stack.enabled  # (Y, X, C): one plane, nothing to choose
    assert widget.build_job().layout == "channels-last"

    widget.image_layer.value = photo
    assert combo.native.itemText(0) == "auto: RGB"
    # the photo model reads a 16-bit 3-channel layer as colour (the rule's exception)
    widget.image_layer.value = composite
    _use_checkpoint(widget, checkpoint)  # a photo checkpoint
    assert combo.native.itemText(0) == "auto: RGB"


@pytest.mark.gui
def test_widget_channels_last_run_matches_enhance(make_napari_viewer, qtbot, notes, tmp_path):
    """A (Y, X, 2) layer runs as two channels (auto), exactly as enhance(channel_axis=-1)."""
    pytest.importorskip("torch")
    from msrnet_napari import enhance
    from msrnet_napari.config import MSRNetConfig
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    config = MSRNetConfig(depth=2, width=8, intensity="linear", log_bases=(1e-4,))
    path = save_checkpoint(init_weights(MSRNet(config), seed=0), tmp_path / "linear.pt")
    rng = np.random.default_rng(3)
    data = np.stack([100 + rng.poisson(8, (40, 50)), 900 + rng.poisson(80, (40, 50))],
                    axis=-1).astype(np.uint16)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="two")
    widget = _open_widget(viewer)
    _use_checkpoint(widget, path)
    widget.run()
    _wait(qtbot, widget)
    assert notes["error"] == []
    out = viewer.layers["two (MSR-net)"]
    np.testing.assert_array_equal(out.data, enhance(data, weights=path, channel_axis=-1))
    darks = [float(v) for v in re.findall(r"ch\d: dark ([\d.]+)", out.metadata["msrnet"]["decision"])]
    assert len(darks) == 2 and darks[0] < 200 < 800 < darks[1]  # a dark level per channel


def _change_every_setting(widget, checkpoint):
    widget.model.value = J.MODEL_CHECKPOINT
    widget.checkpoint.value = checkpoint
    widget.layout_mode.value = "channels-last"
    widget.offset.value = "100, 120"
    widget.gain.value = 2.5
    widget.binning.value = "2"
    widget.bit_depth.value = 12
    widget.device.value = "cpu"
    widget.precision.value = "tf32"
    widget.tile.value = 64
    widget.threads.value = 1
    widget.whole_stack.value = True


@pytest.mark.gui
def test_widget_settings_survive_reopening_and_restore_defaults(make_napari_viewer, checkpoint,
                                                                settings_dir):
    viewer = make_napari_viewer()
    widget = _open_widget(viewer)
    defaults = widget.current_settings()
    assert defaults == {**J.DEFAULT_SETTINGS}
    _change_every_setting(widget, checkpoint)
    changed = widget.current_settings()
    assert (settings_dir / J.SETTINGS_FILE).is_file()
    viewer.window.remove_dock_widget(widget.native)
    widget.native.close()

    reopened = W.MSRNetWidget(viewer)  # a new widget (also what a new session builds)
    assert reopened.current_settings() == changed
    assert reopened.checkpoint.enabled and Path(reopened.checkpoint.value) == Path(checkpoint)
    assert reopened.offset.value == "100, 120" and reopened.gain.value == 2.5
    assert reopened.binning.value == "2"
    assert reopened.precision.value == "tf32"
    assert reopened.build_job(viewer.add_image(np.zeros((8, 8, 2), np.uint8))).precision == "tf32"

    reopened.restore_defaults()
    assert reopened.current_settings() == defaults
    assert not reopened.checkpoint.enabled and reopened.binning.value == "auto"
    assert W.MSRNetWidget(viewer).current_settings() == defaults  # and it stays so


@pytest.mark.gui
def test_widget_settings_ignore_bad_files(make_napari_viewer, settings_dir):
    settings_dir.mkdir(parents=True)
    path = settings_dir / J.SETTINGS_FILE
    viewer = make_napari_viewer()
    path.write_text("{not json")
    assert W.MSRNetWidget(viewer).current_settings() == J.DEFAULT_SETTINGS
    path.write_text('{"tile": 96, "threads": 4096, "device": "tpu", "model": "gone", '
                    '"gain": "high", "layout": "rgb", "whole_stack": 1}')
    settings = W.MSRNetWidget(viewer).current_settings()
    assert settings == {**J.DEFAULT_SETTINGS, "tile": 96, "layout": "rgb"}
