"""napari dock widget: enhance an Image layer with MSR-net.

A thin Qt shell around the Qt-free :mod:`msrnet_napari.widget_jobs` (what to
enhance, the job, running it), which asks the core for every intensity decision.
The work runs in a ``napari.qt.threading`` worker; progress arrives per tile
through a Qt signal (queued to the GUI thread) and Cancel sets a
``threading.Event`` that the engine checks after every tile.
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
    MODEL_AUTO,
    MODEL_CHECKPOINT,
    Job,
    JobError,
    Outcome,
    _error_message,
    base_level,
    device_choices,
    execute_job,
    model_choices,
    output_name,
    parse_offset,
    plan_job,
    plane_offset,
    preview_decision,
    should_stay_lazy,
    spatial_ndim,
)

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

__all__ = ["MSRNetWidget"]


class _ProgressRelay(QObject):
    """Carries per-tile progress from the worker thread to the GUI thread."""

    progressed = Signal(int, int)


class _EnhanceProgress(cancelable_progress):
    """napari progress bar whose Cancel button (activity dock) stops the job at once."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


class MSRNetWidget(Container):
    """Dock widget: choose an Image layer, a model and its settings, press Run.

    The enhanced copy is added as "<name> (MSR-net)" with the source layer's
    scale/translate. For stacks, "Whole stack" enhances every plane; otherwise
    only the plane on screen (kept at its position in the stack).
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._worker = None
        self._cancel_event: Optional[threading.Event] = None
        self._pbar: Optional[_EnhanceProgress] = None
        self._started = 0.0
        self._final_status = ""
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._on_progress)

        self.extend([
            ComboBox(name="image_layer", label="Image", choices=self._image_layers,
                     tooltip="Image layer to enhance"),
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
            ComboBox(name="bit_depth", label="Bit depth",
                     choices=[("auto", 0), ("8-bit", 8), ("10-bit", 10), ("12-bit", 12),
                              ("14-bit", 14), ("16-bit", 16)], value=0,
                     tooltip="Photo model, integer data: white level (auto detects it from "
                             "the layer's maximum)"),
            ComboBox(name="device", label="Device", choices=device_choices(), value="auto",
                     tooltip="auto: CUDA when available, else CPU"),
            SpinBox(name="tile", label="Tile size", value=0, min=0, max=8192, step=32,
                    tooltip="Tile edge in pixels (0 = auto: 256 on the CPU, 2048 on CUDA): "
                            "memory use is bounded by the tile, not the image; the result "
                            "does not depend on it"),
            SpinBox(name="threads", label="CPU threads", value=0, min=0,
                    max=max(os.cpu_count() or 1, 1), tooltip="0 = all cores"),
            CheckBox(name="whole_stack", text="Whole stack", value=False, enabled=False,
                     tooltip="For 3D/4D layers: enhance every plane instead of the one on screen"),
            PushButton(name="preview_button", text="Preview decision"),
            Label(name="decision", label="Decision", value="-"),
            PushButton(name="run_button", text="Run"),
            PushButton(name="cancel_button", text="Cancel", enabled=False),
            ProgressBar(name="progress", label="Progress", min=0, max=1, value=0),
            Label(name="status", label="Status", value="idle"),
        ])
        self.model.changed.connect(self._on_model_changed)
        self.preview_button.clicked.connect(self.preview)
        self.image_layer.changed.connect(self._on_layer_changed)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

        events = napari_viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._refresh_layers)
        for layer in napari_viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        events.inserted.connect(self._watch_name)
        self.native.destroyed.connect(self._on_destroyed)
        self._refresh_layers()

    # ---------------------------------------------------------------- layers
    def _image_layers(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_layers)

    def _refresh_layers(self, _event: Any = None) -> None:
        try:
            self.image_layer.reset_choices()
            self._on_layer_changed()
        except RuntimeError:  # Qt side already deleted
            pass

    def _on_layer_changed(self, _value: Any = None) -> None:
        layer = self.image_layer.value
        stack = False
        if isinstance(layer, Image):
            data = base_level(layer.data, layer.multiscale)
            stack = getattr(data, "ndim", 0) > spatial_ndim(layer.rgb)
        self.whole_stack.enabled = stack and self._worker is None

    def _on_model_changed(self, value: str) -> None:
        self.checkpoint.enabled = value == MODEL_CHECKPOINT
        self.decision.value = "-"

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
        whole = bool(self.whole_stack.value)
        full = base_level(layer.data, layer.multiscale)
        array, indexer = plan_job(layer.data, layer.rgb, self._current_step(layer), whole,
                                  multiscale=layer.multiscale)
        lazy = should_stay_lazy(array, whole)
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
            "metadata": {"msrnet": {
                "source": layer.name,
                "weights": str(weights) if weights is not None else (model or "auto"),
                "plane": None if array.shape == full.shape else list(offset[:-2]),
                "lazy": lazy,
            }},
        }
        if not layer.rgb:
            layer_kwargs["colormap"] = layer.colormap
        for attr in ("units", "axis_labels"):
            if hasattr(layer, attr):
                layer_kwargs[attr] = getattr(layer, attr)
        limits = tuple(float(v) for v in layer.contrast_limits)
        return Job(array=array, reference=reference, rgb=layer.rgb, lazy=lazy, weights=weights,
                   model=model, tile=int(self.tile.value) or None,
                   threads=int(self.threads.value), device=str(self.device.value),
                   bit_depth=int(self.bit_depth.value), offset=parse_offset(self.offset.value),
                   gain=float(self.gain.value), input_limits=limits, source_name=layer.name,
                   layer_kwargs=layer_kwargs)

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
        self._set_running(True, "preparing lazy result..." if job.lazy else "running...")
        self.progress.max, self.progress.value = 1, 0
        self._pbar = _EnhanceProgress(total=0, desc=f"MSR-net: {job.source_name}",
                                      cancel_callback=self.cancel)
        worker = create_worker(execute_job, job, progress=self._relay.progressed.emit,
                               cancel=self._cancel_event, _ignore_errors=True)
        worker.returned.connect(lambda outcome: self._on_returned(job, outcome))
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def cancel(self, _clicked: Any = None) -> None:
        """Ask the running job to stop after the current tile."""
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
                self.status.value = f"tile {done} / {total}"
        except RuntimeError:
            return
        pbar = self._pbar
        if pbar is not None:
            if pbar.total != total:
                pbar.total = total
            pbar.update(int(done) - pbar.n)

    def _on_returned(self, job: Job, outcome: Outcome) -> None:
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
            kwargs["metadata"] = {"msrnet": {**kwargs["metadata"]["msrnet"],
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
        how = "lazy, computed on display" if job.lazy else f"{seconds:.1f} s"
        model = outcome.decision.model if outcome.decision is not None else "?"
        self._final_status = f"added '{added.name}' ({model} model, {how})"

    def _on_errored(self, exc: BaseException) -> None:  # only on bugs: execute_job catches
        self._final_status = "failed (see notification)"
        show_error(_error_message(exc))

    def _on_finished(self) -> None:
        self._worker = None
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
        for name in ("image_layer", "model", "offset", "gain", "bit_depth", "device", "tile",
                     "threads", "preview_button"):
            self[name].enabled = not running
        self.checkpoint.enabled = not running and self.model.value == MODEL_CHECKPOINT
        if running:
            self.whole_stack.enabled = False
        self.status.value = message

    def _on_destroyed(self, *_args: Any) -> None:
        if self._cancel_event is not None:
            self._cancel_event.set()
