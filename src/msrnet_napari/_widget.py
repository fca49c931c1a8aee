"""napari dock widget: enhance an Image layer with MSR-net.

A thin Qt shell around the Qt-free :mod:`msrnet_napari.widget_jobs` (what to
enhance, the job, running it), which asks the core for every intensity decision
and for the layout rule. The work runs in a ``napari.qt.threading`` generator
worker; progress arrives per tile through a Qt signal (queued to the GUI thread),
finished planes of a whole-stack fill arrive as the worker's ``yielded`` values,
and Cancel sets a ``threading.Event`` that the engine checks after every tile.

Responsiveness: the engine runs on every core but one by default ("auto"), so
the GUI thread keeps a core (see benchmarks/bench_widget_latency.py); the engine
releases the GIL while it computes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from .widget_jobs import (
    BINNING_AUTO,
    DEFAULT_SETTINGS,
    LAYOUT_AUTO,
    LAYOUT_LABELS,
    MODEL_AUTO,
    MODEL_CHECKPOINT,
    Decided,
    Job,
    JobError,
    Outcome,
    PlaneDone,
    _error_message,
    auto_threads,
    base_level,
    binning_choices,
    check_result_size,
    choose_layout,
    current_plane,
    device_choices,
    layout_choices,
    load_settings,
    model_choices,
    model_intensity,
    output_name,
    parse_offset,
    plan_job,
    plane_offset,
    precision_choices,
    preview_decision,
    reset_settings,
    resolve_threads,
    result_dtype,
    run_job,
    run_mode,
    save_settings,
    spatial_ndim,
)

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

__all__ = ["MSRNetWidget"]

#: persisted setting -> control name
_SETTING_CONTROLS = {
    "model": "model", "checkpoint": "checkpoint", "layout": "layout_mode", "offset": "offset",
    "gain": "gain", "binning": "binning", "bit_depth": "bit_depth", "device": "device",
    "precision": "precision", "tile": "tile", "threads": "threads", "whole_stack": "whole_stack",
}
#: controls locked while a job runs
_LOCKED = ("image_layer", "layout_mode", "model", "offset", "gain", "binning", "bit_depth",
           "device", "precision", "tile", "threads", "preview_button", "defaults_button")


class _ProgressRelay(QObject):
    """Carries per-tile progress from the worker thread to the GUI thread."""

    progressed = Signal(int, int)


class _EnhanceProgress(cancelable_progress):
    """napari progress bar whose Cancel button (activity dock) stops the job at once."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


#: source-layer metadata the result layer keeps (FITS header: saving the result as FITS
#: writes the source's WCS and other cards back, see _writer.py)
CARRIED_METADATA = ("fits_header",)


def _carried_metadata(metadata: Any) -> dict[str, Any]:
    return {k: metadata[k] for k in CARRIED_METADATA if isinstance(metadata, dict) and k in metadata}


def _thread_choices() -> list[tuple[str, int]]:
    cores = max(os.cpu_count() or 1, 1)
    choices = [(f"auto ({auto_threads(cores)} of {cores} cores)", 0)]
    choices += [(f"{n} (all cores)" if n == cores else str(n), n) for n in range(1, cores + 1)]
    return choices


class MSRNetWidget(Container):
    """Dock widget: choose an Image layer, a layout, a model and its settings, press Run.

    The enhanced copy is added as "<name> (MSR-net)" with the source layer's
    scale/translate. For stacks, "Whole stack" enhances every plane; otherwise
    only the plane on screen (kept at its position in the stack). Big and dask
    stacks fill a result layer plane by plane (it appears at once). The settings
    are saved (``widget_jobs.settings_path()``) and come back with the widget;
    "Restore defaults" resets them.
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._worker = None
        self._cancel_event: Optional[threading.Event] = None
        self._pbar: Optional[_EnhanceProgress] = None
        self._started = 0.0
        self._final_status = ""
        self._fill_layer: Optional[Image] = None  # "planes" mode: the layer being filled
        self._planes = (0, 0)  # "planes" mode: (done, total)
        self._loading_settings = False
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._on_progress)

        self.extend([
            ComboBox(name="image_layer", label="Image", choices=self._image_layers,
                     tooltip="Image layer to enhance"),
            ComboBox(name="layout_mode", label="Layout", choices=layout_choices(),
                     value=LAYOUT_AUTO,
                     tooltip="How the layer's axes are read. auto: the rule of "
                             "msrnet_napari.layout.guess_layout (shown here, reason in the "
                             "tooltip); RGB: last axis = colour; channels (last axis): each "
                             "value of the last axis is a channel enhanced on its own, Y, X "
                             "before it; planes: last two axes = Y, X, every other axis holds "
                             "planes"),
            ComboBox(name="model", label="Model", choices=model_choices(), value=MODEL_AUTO,
                     tooltip="photo: sRGB photos (brighten + denoise); microscopy: linear "
                             "scientific data (denoise, keeps dark level and intensities); "
                             "auto: photo for 8-bit/float RGB, microscopy otherwise"),
            FileEdit(name="checkpoint", label="Checkpoint", mode="r",
                     filter="Checkpoints (*.pt *.pth *.ckpt);;All files (*)", enabled=False),
            LineEdit(name="offset", label="Offset", value="auto",
                     tooltip="Linear (microscopy) model: dark level (camera offset / "
                             "background) - 'auto' estimates it per channel, or a number"),
            FloatSpinBox(name="gain", label="Gain", value=1.0, min=0.01, max=10000.0, step=0.5,
                         tooltip="Linear (microscopy) model: exposure ratio applied to the "
                                 "signal above the dark level (1 = restore in the same units)"),
            ComboBox(name="binning", label="Binning", choices=binning_choices(),
                     value=BINNING_AUTO,
                     tooltip="Linear (microscopy) model, for few photons per pixel: restore "
                             "2x2 (3x3, 4x4) binned pixels, cycle-spun back to the full pixel "
                             "grid (linear, no interpolation) - less noise for less "
                             "resolution. auto: channels with a low signal-to-noise ratio are "
                             "binned 2x2; the decision preview shows when auto chose it "
                             "('binning 2x2 (SNR ...)'). 1 (off): always full resolution"),
            ComboBox(name="bit_depth", label="Bit depth",
                     choices=[("auto", 0), ("8-bit", 8), ("10-bit", 10), ("12-bit", 12),
                              ("14-bit", 14), ("16-bit", 16)], value=0,
                     tooltip="Photo model, integer data: white level (auto detects it from "
                             "the layer's maximum)"),
            ComboBox(name="device", label="Device", choices=device_choices(), value="auto",
                     tooltip="auto: CUDA when available, else CPU"),
            ComboBox(name="precision", label="GPU precision", choices=precision_choices(),
                     value="fp32",
                     tooltip="CUDA engine: fp32 gives the CPU engine's numbers (to ~1e-6); "
                             "tf32 runs the 3x3 convolutions on the tensor cores (compute "
                             "capability 8.0 and newer; inputs and weights rounded to a 10-bit "
                             "mantissa, fp32 sums). The CPU engine always computes fp32"),
            SpinBox(name="tile", label="Tile size", value=0, min=0, max=8192, step=32,
                    tooltip="Tile edge in pixels (0 = auto: sized from the CPU's cache, "
                            "128-512; 2048 on CUDA): "
                            "memory use is bounded by the tile, not the image; the result "
                            "does not depend on it"),
            ComboBox(name="threads", label="CPU threads", choices=_thread_choices(), value=0,
                     tooltip="auto: every core but one, so napari stays responsive while "
                             "the engine runs; all cores is a little faster on an idle "
                             "machine"),
            CheckBox(name="whole_stack", text="Whole stack", value=False, enabled=False,
                     tooltip="For 3D/4D layers: enhance every plane instead of the one on "
                             "screen (big and dask stacks fill the result plane by plane)"),
            PushButton(name="preview_button", text="Preview decision"),
            Label(name="decision", label="Decision", value="-"),
            PushButton(name="run_button", text="Run"),
            PushButton(name="cancel_button", text="Cancel", enabled=False),
            ProgressBar(name="progress", label="Progress", min=0, max=1, value=0),
            Label(name="status", label="Status", value="idle"),
            PushButton(name="defaults_button", text="Restore defaults",
                       tooltip="Reset every setting above to its default (settings are "
                               "otherwise remembered between sessions)"),
        ])
        self.model.changed.connect(self._on_model_changed)
        self.checkpoint.changed.connect(self._on_layout_inputs_changed)
        self.layout_mode.changed.connect(self._on_layout_inputs_changed)
        self.preview_button.clicked.connect(self.preview)
        self.image_layer.changed.connect(self._on_layer_changed)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.defaults_button.clicked.connect(self.restore_defaults)

        self._apply_settings(load_settings())
        for name in _SETTING_CONTROLS.values():
            self[name].changed.connect(self._save_settings)

        events = napari_viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._refresh_layers)
        for layer in napari_viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        events.inserted.connect(self._watch_name)
        self.native.destroyed.connect(self._on_destroyed)
        self._refresh_layers()

    # -------------------------------------------------------------- settings
    def current_settings(self) -> dict[str, Any]:
        """The persisted settings as the controls show them."""
        values = {key: self[name].value for key, name in _SETTING_CONTROLS.items()}
        path = values["checkpoint"]
        values["checkpoint"] = "" if path is None or str(path) in ("", ".") else str(path)
        return values

    def _apply_settings(self, settings: dict[str, Any]) -> None:
        """Set the controls from ``settings``; values a control cannot take are skipped."""
        self._loading_settings = True
        try:
            for key, name in _SETTING_CONTROLS.items():
                if key not in settings:
                    continue
                control, value = self[name], settings[key]
                if key == "checkpoint":
                    if not value:  # FileEdit would make Path(".") the working folder
                        control.line_edit.value = ""
                        continue
                    value = Path(value)
                elif isinstance(control, ComboBox):
                    if value not in [c for c in control.choices]:
                        logger.debug("setting %s=%r is not offered here", key, value)
                        continue
                try:
                    control.value = value
                except (ValueError, TypeError):
                    logger.debug("could not restore setting %s=%r", key, value, exc_info=True)
        finally:
            self._loading_settings = False
        self.checkpoint.enabled = self.model.value == MODEL_CHECKPOINT

    def _save_settings(self, _value: Any = None) -> None:
        if not self._loading_settings:
            save_settings(self.current_settings())

    def restore_defaults(self, _clicked: Any = None) -> None:
        """Every setting back to its default; the saved settings are forgotten."""
        if self._worker is not None:
            return
        self._apply_settings(DEFAULT_SETTINGS)
        reset_settings()
        self.decision.value = "-"
        self._on_layer_changed()
        self.status.value = "settings restored to defaults"

    # ---------------------------------------------------------------- layers
    def _image_layers(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_layers)

    def _refresh_layers(self, _event: Any = None) -> None:
        if self._fill_layer is not None and not self._fill_layer_alive():
            self._stop_fill_removed()
        try:
            self.image_layer.reset_choices()
            self._on_layer_changed()
        except RuntimeError:  # Qt side already deleted
            pass

    def _on_layer_changed(self, _value: Any = None) -> None:
        layer = self.image_layer.value
        stack = False
        auto_label, auto_reason = "auto", "auto: the layout rule decides once a layer is chosen"
        if isinstance(layer, Image):
            data = base_level(layer.data, layer.multiscale)
            kind, auto_reason = self._auto_layout(data)
            auto_label = f"auto: {LAYOUT_LABELS[kind]}"
            try:
                kind, _ = self._layout_for(data)
                stack = getattr(data, "ndim", 0) > spatial_ndim(kind)
            except JobError:
                stack = False
        self.layout_mode.native.setItemText(0, auto_label)
        self.layout_mode.native.setItemData(0, auto_reason, 3)  # Qt.ToolTipRole
        self.layout_mode.tooltip = auto_reason if self.layout_mode.value == LAYOUT_AUTO else \
            f"{LAYOUT_LABELS[self.layout_mode.value]} (chosen); auto would be: {auto_reason}"
        self.whole_stack.enabled = stack and self._worker is None

    def _on_layout_inputs_changed(self, _value: Any = None) -> None:
        self.decision.value = "-"
        try:
            self._on_layer_changed()
        except RuntimeError:
            pass

    def _on_model_changed(self, value: str) -> None:
        self.checkpoint.enabled = value == MODEL_CHECKPOINT and self._worker is None
        self._on_layout_inputs_changed()

    def _model_intensity(self, data: Any) -> Optional[str]:
        try:
            model, weights = self._selected_model()
        except JobError:
            return None
        return model_intensity(model, weights, data.dtype, rgb=False)

    def _auto_layout(self, data: Any) -> tuple[str, str]:
        return choose_layout(LAYOUT_AUTO, data.shape, data.dtype, self._model_intensity(data))

    def _layout_for(self, data: Any) -> tuple[str, str]:
        """(kind, reason) of the Layout control for ``data`` (JobError if impossible)."""
        return choose_layout(self.layout_mode.value, data.shape, data.dtype,
                             self._model_intensity(data))

    # ---------------------------------------------------------------- running
    @property
    def is_running(self) -> bool:
        return self._worker is not None

    def _selected_model(self) -> tuple[Optional[str], Any]:
        """(model name or None for auto, checkpoint path or None)."""
        value = self.model.value
        if value != MODEL_CHECKPOINT:
            return (None if value == MODEL_AUTO else str(value)), None
        path = self.checkpoint.value
        if path is None or str(path) in ("", "."):
            raise JobError("choose a checkpoint file, or select a bundled model")
        path = Path(path)
        if not path.is_file():
            raise JobError(f"checkpoint file not found: {path}")
        return None, path

    def _current_step(self, layer: Image) -> np.ndarray:
        position = layer.world_to_data(self._viewer.dims.point)
        return np.round(np.asarray(position, dtype=float)).astype(int)

    def build_job(self, layer: Any = None) -> Job:
        """Validate the selection and settings; raises JobError with a user message."""
        layer = self.image_layer.value if layer is None else layer
        if layer is None:
            raise JobError("no Image layer selected - open an image or a sample first")
        if not isinstance(layer, Image):
            raise JobError(
                f"'{layer.name}' is a {type(layer).__name__} layer; MSR-net enhances Image layers"
            )
        model, weights = self._selected_model()
        full = base_level(layer.data, layer.multiscale)
        kind, layout_reason = self._layout_for(full)
        whole = bool(self.whole_stack.value) and full.ndim > spatial_ndim(kind)
        step = self._current_step(layer)
        array, indexer = plan_job(layer.data, kind, step, whole, multiscale=layer.multiscale)
        mode = run_mode(array, kind, whole)
        check_result_size(array.shape, array.dtype)
        # in-memory layers: scale by the whole layer, so planes enhanced one at a time
        # match a whole-stack run; otherwise by the data being enhanced. (The range,
        # and NaN/inf, are checked in the worker thread: a pass over the data.)
        reference = full if isinstance(full, np.ndarray) else None
        offset = plane_offset(indexer, layer.rgb)
        scale = np.asarray(layer.scale, dtype=float)
        translate = np.asarray(layer.translate, dtype=float) + np.asarray(offset) * scale
        layer_kwargs: dict[str, Any] = {
            "name": output_name(layer.name),
            "rgb": layer.rgb,
            "scale": tuple(scale),
            "translate": tuple(translate),
            "rotate": layer.rotate,
            "shear": layer.shear,
            "affine": layer.affine,
            "blending": layer.blending,
            "metadata": {**_carried_metadata(layer.metadata), "msrnet": {
                "source": layer.name,
                "weights": str(weights) if weights is not None else (model or "auto"),
                "plane": None if array.shape == full.shape else list(offset[:-2]),
                "layout": kind,
                "layout_reason": layout_reason,
                "mode": mode,
            }},
        }
        if not layer.rgb:
            layer_kwargs["colormap"] = layer.colormap
        for attr in ("units", "axis_labels"):
            if hasattr(layer, attr):
                layer_kwargs[attr] = getattr(layer, attr)
        limits = tuple(float(v) for v in layer.contrast_limits)
        n_lead = full.ndim - spatial_ndim(kind)
        first = current_plane(full.shape[:n_lead], step) if mode == "planes" else ()
        return Job(array=array, reference=reference, layout=kind, mode=mode, weights=weights,
                   model=model, tile=int(self.tile.value) or None,
                   threads=resolve_threads(self.threads.value), device=str(self.device.value),
                   precision=str(self.precision.value),
                   bit_depth=int(self.bit_depth.value), offset=parse_offset(self.offset.value),
                   gain=float(self.gain.value), binning=self.binning.value,
                   input_limits=limits, first_plane=first,
                   source_name=layer.name, layer_kwargs=layer_kwargs)

    def preview(self, _clicked: Any = None) -> Optional[str]:
        """Show the intensity decision a run would take (model, offset, scale, gain)."""
        try:
            text = preview_decision(self.build_job()).describe()
        except JobError as exc:
            self.decision.value = "-"
            self.status.value = "invalid settings (see notification)"
            show_error(f"MSR-net: {exc}")
            return None
        self.decision.value = text
        self.decision.tooltip = text
        return text

    def run(self, _clicked: Any = None) -> None:
        """Start enhancing the selected layer (no-op while a job runs)."""
        if self._worker is not None:
            return
        try:
            job = self.build_job()
        except JobError as exc:
            self.status.value = "invalid settings (see notification)"
            show_error(f"MSR-net: {exc}")
            return
        self._cancel_event = threading.Event()
        self._started = time.monotonic()
        self._final_status = ""
        self._fill_layer = None
        self._planes = (0, job.n_planes) if job.mode == "planes" else (0, 0)
        if job.mode == "planes":
            try:
                self._fill_layer = self._add_fill_layer(job)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory
                logger.debug("adding the result layer failed", exc_info=True)
                self.status.value = "failed (see notification)"
                show_error(f"MSR-net: could not add the result layer: {exc}")
                return
        self._set_running(True, f"deciding the scaling for {job.n_planes} planes..."
                          if job.mode == "planes" else "running...")
        self.progress.max, self.progress.value = 1, 0
        self._pbar = _EnhanceProgress(total=0, desc=f"MSR-net: {job.source_name}",
                                      cancel_callback=self.cancel)
        worker = create_worker(run_job, job, progress=self._relay.progressed.emit,
                               cancel=self._cancel_event, _ignore_errors=True)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(lambda outcome: self._on_returned(job, outcome))
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _add_fill_layer(self, job: Job) -> Image:
        """The result layer of a "planes" job: zeros, there at once, filled as planes finish."""
        kwargs = dict(job.layer_kwargs)
        kwargs["contrast_limits"] = job.input_limits  # the decision's arrive with it
        meta = dict(kwargs["metadata"]["msrnet"])
        meta.update(planes_done=0, planes_total=job.n_planes, complete=False)
        kwargs["metadata"] = {**kwargs["metadata"], "msrnet": meta}
        data = np.zeros(job.array.shape, dtype=result_dtype(job))
        return self._viewer.add_image(data, **kwargs)

    def cancel(self, _clicked: Any = None) -> None:
        """Ask the running job to stop after the current tile (finished planes stay)."""
        if self._cancel_event is not None and self._worker is not None:
            self._cancel_event.set()
            try:
                self.status.value = "cancelling..."
            except RuntimeError:
                pass

    # ------------------------------------------------------------- callbacks
    def _on_progress(self, done: int, total: int) -> None:
        try:
            self.progress.max = max(int(total), 1)
            self.progress.value = min(int(done), int(total))
            if self._cancel_event is not None and not self._cancel_event.is_set():
                planes_done, planes_total = self._planes
                if planes_total:
                    self.status.value = (f"plane {min(planes_done + 1, planes_total)} / "
                                         f"{planes_total} (tile {done} / {total})")
                else:
                    self.status.value = f"tile {done} / {total}"
        except RuntimeError:
            return
        pbar = self._pbar
        if pbar is not None:
            if pbar.total != total:
                pbar.total = total
            pbar.update(int(done) - pbar.n)

    def _fill_layer_alive(self) -> bool:
        layer = self._fill_layer
        return layer is not None and layer in self._viewer.layers

    def _on_yielded(self, event: Any) -> None:
        if isinstance(event, Decided):
            text = event.decision.describe()
            try:
                self.decision.value = text
                self.decision.tooltip = text
            except RuntimeError:
                pass
            if self._fill_layer_alive():
                layer = self._fill_layer
                layer.contrast_limits = event.contrast_limits
                layer.metadata["msrnet"].update(model=event.decision.model, decision=text)
            return
        if not isinstance(event, PlaneDone):
            return
        self._planes = (event.done, event.total)
        if not self._fill_layer_alive():
            self._stop_fill_removed()
            return
        layer = self._fill_layer
        layer.data[event.index] = event.data
        layer.metadata["msrnet"]["planes_done"] = event.done
        layer.refresh()

    def _stop_fill_removed(self) -> None:
        """The result layer of a running fill was deleted: stop the job."""
        if self._fill_layer is not None and self._cancel_event is not None \
                and not self._cancel_event.is_set():
            self._cancel_event.set()
            self._final_status = "cancelled: the result layer was removed"

    def _on_returned(self, job: Job, outcome: Outcome) -> None:
        if job.mode == "planes":
            self._finish_fill(job, outcome)
            return
        if outcome.status == "cancelled":
            self._final_status = "cancelled"
            show_info(outcome.message or "MSR-net: cancelled")
            return
        if outcome.status != "ok":
            self._final_status = "failed (see notification)"
            show_error(outcome.message)
            return
        kwargs = dict(job.layer_kwargs)
        kwargs["contrast_limits"] = outcome.contrast_limits
        if outcome.decision is not None:
            meta = kwargs["metadata"]
            kwargs["metadata"] = {**meta, "msrnet": {**meta["msrnet"],
                                                     "model": outcome.decision.model,
                                                     "decision": outcome.decision.describe()}}
            self.decision.value = outcome.decision.describe()
        try:
            added = self._viewer.add_image(outcome.data, **kwargs)
        except Exception as exc:  # noqa: BLE001
            logger.debug("adding the result layer failed", exc_info=True)
            self._final_status = "failed (see notification)"
            show_error(f"MSR-net: could not add the result layer: {exc}")
            return
        seconds = time.monotonic() - self._started
        model = outcome.decision.model if outcome.decision is not None else "?"
        self._final_status = f"added '{added.name}' ({model} model, {seconds:.1f} s)"

    def _finish_fill(self, job: Job, outcome: Outcome) -> None:
        layer = self._fill_layer
        alive = self._fill_layer_alive()
        done, total = outcome.planes_done, outcome.planes_total
        if alive:
            layer.metadata["msrnet"].update(planes_done=done, complete=outcome.status == "ok")
        if alive and done == 0 and outcome.status != "ok":
            self._fill_layer = None  # removed by us, not by the user
            self._viewer.layers.remove(layer)  # nothing finished: no empty layer left behind
            alive = False
        name = f"'{layer.name}'" if layer is not None else "the result layer"
        seconds = time.monotonic() - self._started
        if not alive and self._final_status:  # removed by the user: nothing to report
            return
        kept = f"; {name} keeps the {done} finished planes" if alive and done else ""
        if outcome.status == "ok":
            model = outcome.decision.model if outcome.decision is not None else "?"
            self._final_status = (f"filled {name}: {done} planes ({model} model, "
                                  f"{seconds:.1f} s)")
            return
        if outcome.status == "cancelled":
            if not self._final_status:
                self._final_status = (f"cancelled: {done} of {total} planes done"
                                      + (f" (kept in {name})" if kept else ""))
            show_info((outcome.message or "MSR-net: cancelled") + kept)
            return
        self._final_status = (f"failed after {done} of {total} planes (see notification)"
                              if done else "failed (see notification)")
        show_error(outcome.message + kept)

    def _on_errored(self, exc: BaseException) -> None:  # only on bugs: run_job catches
        self._final_status = "failed (see notification)"
        show_error(_error_message(exc))

    def _on_finished(self) -> None:
        self._worker = None
        self._fill_layer = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        try:
            self._set_running(False, self._final_status)
            self._on_layer_changed()
        except RuntimeError:
            pass

    def _set_running(self, running: bool, message: str) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running
        for name in _LOCKED:
            self[name].enabled = not running
        self.checkpoint.enabled = not running and self.model.value == MODEL_CHECKPOINT
        if running:
            self.whole_stack.enabled = False
        self.status.value = message

    def _on_destroyed(self, *_args: Any) -> None:
        if self._cancel_event is not None:
            self._cancel_event.set()
