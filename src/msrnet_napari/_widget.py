"""napari dock widget: enhance an Image layer with MSR-net.

The GUI is a thin shell around Qt-free helpers (``plan_job``,
``choose_scaling_kwargs``, ``output_contrast_limits``, ``execute_job``, ...)
that are unit-tested without a viewer. The work runs in a
``napari.qt.threading`` worker; progress arrives per tile through a Qt signal
(queued to the GUI thread) and Cancel sets a ``threading.Event`` that the
engine checks after every tile.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .normalize import detect_bit_depth

logger = logging.getLogger(__name__)

OUTPUT_SUFFIX = " (MSR-net)"
DEFAULT_WEIGHTS = "Bundled default"
CHECKPOINT_WEIGHTS = "Checkpoint file"
#: whole-stack runs on dask data bigger than this stay lazy (computed on display)
LAZY_THRESHOLD_BYTES = 256 * 2**20


class JobError(ValueError):
    """A problem with the user's input, reported as a plain message (no traceback)."""


# --------------------------------------------------------------------------
# Qt-free helpers
# --------------------------------------------------------------------------

def is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.") and hasattr(array, "compute")


def base_level(layer_data: Any, multiscale: bool = False) -> Any:
    """The full-resolution array of a layer's data (level 0 of a multiscale pyramid)."""
    if multiscale:
        return layer_data[0]
    return layer_data


def spatial_ndim(rgb: bool) -> int:
    """Trailing axes that form one plane: (Y, X) or (Y, X, C)."""
    return 3 if rgb else 2


def validate_data(data: Any, rgb: bool) -> None:
    """Raise JobError for arrays the network cannot take (before any work starts)."""
    shape = tuple(getattr(data, "shape", ()))
    dtype = np.dtype(getattr(data, "dtype", np.float64))
    need = spatial_ndim(rgb)
    if len(shape) < need:
        what = "an RGB image needs (Y, X, 3|4)" if rgb else "an image needs at least 2 axes (Y, X)"
        raise JobError(f"data of shape {shape} cannot be enhanced: {what}")
    if rgb and shape[-1] not in (3, 4):
        raise JobError(f"RGB data must have 3 or 4 channels in its last axis, got {shape[-1]}")
    if any(n == 0 for n in shape):
        raise JobError(f"data of shape {shape} is empty")
    if dtype == bool or dtype.kind not in "uif":
        raise JobError(f"unsupported data type {dtype}: MSR-net needs integer or float images")


def plan_job(
    layer_data: Any,
    rgb: bool,
    current_step: Sequence[int],
    whole_stack: bool,
    multiscale: bool = False,
) -> tuple[Any, tuple[slice, ...]]:
    """Choose what to enhance: the plane on screen or the whole stack.

    Parameters
    ----------
    layer_data : array-like, dask array, or list of them when ``multiscale``
    rgb : whether the last axis holds RGB(A) channels
    current_step : data-index position of the layer's non-channel axes
        (``len == ndim - 1`` for RGB, ``ndim`` otherwise); only the leading
        (non-spatial) entries are used
    whole_stack : enhance every plane instead of the current one

    Returns
    -------
    (array, indexer) where ``array == data[indexer]``. For a single plane the
    leading axes are kept with length 1 (``slice(i, i + 1)``), so the result
    keeps the layer's dimensionality and can sit at the plane it came from.
    Slicing a dask array stays lazy.
    """
    data = base_level(layer_data, multiscale)
    validate_data(data, rgb)
    n_spatial = spatial_ndim(rgb)
    n_lead = data.ndim - n_spatial
    full = (slice(None),) * data.ndim
    if whole_stack or n_lead == 0:
        return data, full
    step = list(current_step)[:n_lead]
    if len(step) < n_lead:
        step = [0] * (n_lead - len(step)) + step
    lead = []
    for index, size in zip(step, data.shape[:n_lead]):
        i = int(np.clip(int(round(float(index))), 0, size - 1))
        lead.append(slice(i, i + 1))
    indexer = tuple(lead) + (slice(None),) * n_spatial
    return data[indexer], indexer


def plane_offset(indexer: Sequence[slice], rgb: bool) -> tuple[int, ...]:
    """Start index of every non-channel axis (0 for spatial axes)."""
    n = len(indexer) - (1 if rgb else 0)
    return tuple(int(s.start or 0) for s in indexer[:n])


def should_stay_lazy(array: Any, whole_stack: bool,
                     threshold_bytes: Optional[int] = None) -> bool:
    """Whole-stack runs of big dask arrays are returned lazily, not computed.

    "Big" means more than ``threshold_bytes`` (default: ``LAZY_THRESHOLD_BYTES``).
    """
    if not (whole_stack and is_dask(array)):
        return False
    if threshold_bytes is None:
        threshold_bytes = LAZY_THRESHOLD_BYTES
    nbytes = int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize
    return nbytes > threshold_bytes


def _extremes(array: Any) -> tuple[float, float]:
    if is_dask(array):
        import dask

        lo, hi = dask.compute(array.min(), array.max())
        return float(lo), float(hi)
    array = np.asarray(array)
    return float(array.min()), float(array.max())


def choose_scaling_kwargs(reference: Any, bit_depth: int = 0) -> dict[str, Any]:
    """``bit_depth`` / ``intensity_range`` for ``enhance`` so every plane of a layer is
    scaled alike.

    ``reference`` is the data whose range decides (the whole layer when it is in
    memory, else the part being enhanced); dask data is reduced here (one pass).
    Integers: uint8 -> 8 bits; wider -> bit depth detected from the maximum
    (12-bit data in uint16 -> 4095 is white). Floats in [0, 1] are used as is;
    other float ranges map (min, max) onto [0, 1]. Raises JobError for NaN/inf,
    negative integers and constant float data outside [0, 1]. ``bit_depth`` > 0
    (the widget's "Bit depth" choice) replaces the detection for integer data,
    e.g. 12 for a dim 12-bit camera image whose maximum would look like 10 bits.
    """
    dtype = np.dtype(reference.dtype)
    if dtype.kind in "ui" and dtype.itemsize == 1 and dtype.kind == "u" and not bit_depth:
        return {"bit_depth": 8}
    lo, hi = _extremes(reference)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise JobError("the image contains NaN or infinite values; replace them before enhancing")
    if dtype.kind in "ui":
        if lo < 0:
            raise JobError(
                f"the image has negative values (min {lo:g}); MSR-net needs non-negative "
                "intensities - rescale or convert the layer first"
            )
        if bit_depth:
            if hi > 2**bit_depth - 1:
                raise JobError(f"values up to {hi:g} do not fit the chosen {bit_depth}-bit range; "
                               "pick a larger bit depth or 'auto'")
            return {"bit_depth": int(bit_depth)}
        return {"bit_depth": detect_bit_depth(hi)}
    if lo >= 0.0 and hi <= 1.0:
        return {"intensity_range": (0.0, 1.0)}
    if hi <= lo:
        raise JobError(f"the image is constant ({lo:g}) and outside [0, 1]; nothing to enhance")
    return {"intensity_range": (lo, hi)}


def output_contrast_limits(
    dtype: Any,
    data: Any = None,
    *,
    bit_depth: Optional[int] = None,
    intensity_range: Optional[tuple[float, float]] = None,
) -> tuple[float, float]:
    """Display range for an enhanced layer.

    Integers: the full scale of the bit depth (given, or detected from ``data``;
    uint8 -> (0, 255), 12-bit -> (0, 4095)); without either, the dtype's range.
    Floats: ``intensity_range`` when given, else (0, 1) when the data lies in
    [0, 1], else the 0.5-99.5 percentiles of the finite values of ``data``.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        if bit_depth is None and dtype.itemsize == 1 and dtype.kind == "u":
            bit_depth = 8
        if bit_depth is None and data is not None and not is_dask(data):
            arr = np.asarray(data)
            if arr.size:
                bit_depth = detect_bit_depth(max(float(arr.max()), 1.0))
        if bit_depth is None:
            info = np.iinfo(dtype)
            return (0.0, float(info.max))
        return (0.0, float(2**int(bit_depth) - 1))
    if intensity_range is not None:
        return (float(intensity_range[0]), float(intensity_range[1]))
    if data is None or is_dask(data):
        return (0.0, 1.0)
    arr = np.asarray(data)
    finite = arr[np.isfinite(arr)] if arr.size else arr
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def output_name(name: str) -> str:
    return f"{name}{OUTPUT_SUFFIX}"


@dataclass
class Job:
    """Everything the worker thread needs; built in the GUI thread by the widget."""

    array: Any  # what to enhance (numpy / dask / array-like), already sliced
    reference: Any  # data that decides the intensity scaling
    rgb: bool
    lazy: bool
    weights: Any  # None = bundled default, or a path
    tile: Optional[int] = None  # None = the device's default
    threads: int = 0
    device: str = "auto"
    bit_depth: int = 0  # 0 = detect from the data (integer layers only)
    source_name: str = ""
    offset: tuple[int, ...] = ()
    layer_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a worker returns: status 'ok' / 'cancelled' / 'error'."""

    status: str
    data: Any = None
    contrast_limits: Optional[tuple[float, float]] = None
    message: str = ""


def _is_cancelled(exc: BaseException) -> bool:
    try:
        from . import Cancelled
    except Exception:  # engine not importable: cannot be its exception
        return False
    return isinstance(exc, Cancelled)


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, JobError):
        return f"MSR-net: {exc}"
    if isinstance(exc, FileNotFoundError):
        return f"MSR-net: weights not found - {exc}"
    if isinstance(exc, (ValueError, TypeError)):
        return f"MSR-net: {exc}"
    if isinstance(exc, MemoryError):
        return "MSR-net: out of memory - enable tiling (smaller tile size) or process one plane"
    return f"MSR-net failed ({type(exc).__name__}): {exc}"


def execute_job(
    job: Job,
    progress: Optional[Callable[[int, int], Any]] = None,
    cancel: Any = None,
) -> Outcome:
    """Run one job (in the worker thread). Never raises: errors become an Outcome."""
    from . import enhance
    from .enhance import exposure_gain_for

    try:
        if cancel is not None and cancel.is_set():
            raise _cancelled_exception()
        array = job.array
        if not job.lazy and not isinstance(array, np.ndarray):
            array = np.asarray(array)  # computes a dask / zarr plane here, off the GUI thread
        scaling = choose_scaling_kwargs(array if job.reference is None else job.reference,
                                        bit_depth=job.bit_depth)
        kwargs = dict(weights=job.weights, rgb=job.rgb, tile=job.tile, threads=job.threads,
                      device=job.device, **scaling)
        if job.reference is not None:  # one plane of an in-memory stack: the stack's gain
            kwargs["exposure_gain"] = exposure_gain_for(job.reference, weights=job.weights,
                                                        rgb=job.rgb, **scaling)
        if job.lazy:  # progress/cancel do not apply: blocks compute when napari draws them
            result = enhance(array, **kwargs)
        else:
            result = enhance(array, progress=progress, cancel=cancel, **kwargs)
        limits = output_contrast_limits(result.dtype, None if job.lazy else result, **scaling)
        return Outcome("ok", result, limits)
    except Exception as exc:  # noqa: BLE001 - reported to the user as a notification
        if _is_cancelled(exc):
            return Outcome("cancelled", message="MSR-net: cancelled")
        logger.debug("MSR-net job failed", exc_info=True)
        return Outcome("error", message=_error_message(exc))


def _cancelled_exception() -> BaseException:
    from . import Cancelled

    return Cancelled("enhancement cancelled")


def device_choices() -> list[str]:
    """'auto', 'cpu', plus 'cuda' when the engine sees a GPU."""
    choices = ["auto", "cpu"]
    try:
        from . import cuda_available

        if cuda_available():
            choices.append("cuda")
    except Exception:  # no compiled engine / no CUDA: CPU only
        logger.debug("cuda_available() failed", exc_info=True)
    return choices


def default_weights_status() -> str:
    """'' when bundled weights are installed, else a short note for the weights menu."""
    try:
        from .weights import default_weights_path

        path = default_weights_path()
    except FileNotFoundError:
        return "not installed"
    except Exception:
        return ""
    if path is None or not Path(path).exists():
        return "not installed"
    return ""


# --------------------------------------------------------------------------
# Qt widget
# --------------------------------------------------------------------------

from magicgui.widgets import (  # noqa: E402  (Qt-free helpers above stay importable first)
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image  # noqa: E402
from napari.qt.threading import create_worker  # noqa: E402
from napari.utils import cancelable_progress  # noqa: E402
from napari.utils.notifications import show_error, show_info  # noqa: E402
from napari.viewer import Viewer  # noqa: E402
from qtpy.QtCore import QObject, Signal  # noqa: E402


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
    """Dock widget: choose an Image layer, weights and engine settings, press Run.

    The enhanced copy is added as "<name> (MSR-net)" with the source layer's
    scale/translate. For stacks, "Whole stack" enhances every plane; otherwise
    only the plane on screen (kept at its position in the stack).
    """

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._worker = None
        self._cancel_event: Optional[threading.Event] = None
        self._pbar: Optional[_EnhanceProgress] = None
        self._started = 0.0
        self._final_status = ""
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._on_progress)

        note = default_weights_status()
        self._default_label = DEFAULT_WEIGHTS + (f" ({note})" if note else "")
        self.extend([
            ComboBox(name="image_layer", label="Image", choices=self._image_layers,
                     tooltip="Image layer to enhance"),
            ComboBox(name="weights", label="Weights",
                     choices=[(self._default_label, DEFAULT_WEIGHTS),
                              (CHECKPOINT_WEIGHTS, CHECKPOINT_WEIGHTS)],
                     value=DEFAULT_WEIGHTS,
                     tooltip="Bundled default model, or a PyTorch checkpoint (.pt) saved by "
                             "msrnet-train / msrnet_napari.model.save_checkpoint"),
            FileEdit(name="checkpoint", label="Checkpoint", mode="r",
                     filter="Checkpoints (*.pt *.pth *.ckpt);;All files (*)", enabled=False),
            ComboBox(name="device", label="Device", choices=device_choices(), value="auto",
                     tooltip="auto: CUDA when available, else CPU"),
            SpinBox(name="tile", label="Tile size", value=0, min=0, max=8192, step=32,
                    tooltip="Tile edge in pixels (0 = auto: 256 on the CPU, 2048 on CUDA): "
                            "memory use is bounded by the tile, not the image; the result "
                            "does not depend on it"),
            ComboBox(name="bit_depth", label="Bit depth",
                     choices=[("auto", 0), ("8-bit", 8), ("10-bit", 10), ("12-bit", 12),
                              ("14-bit", 14), ("16-bit", 16)], value=0,
                     tooltip="White level of integer data: auto detects it from the layer's "
                             "maximum (a dim 12-bit image may look like 10-bit data)"),
            SpinBox(name="threads", label="CPU threads", value=0, min=0,
                    max=max(os.cpu_count() or 1, 1), tooltip="0 = all cores"),
            CheckBox(name="whole_stack", text="Whole stack", value=False, enabled=False,
                     tooltip="For 3D/4D layers: enhance every plane instead of the one on screen"),
            PushButton(name="run_button", text="Run"),
            PushButton(name="cancel_button", text="Cancel", enabled=False),
            ProgressBar(name="progress", label="Progress", min=0, max=1, value=0),
            Label(name="status", label="Status", value="idle"),
        ])
        self.weights.changed.connect(self._on_weights_changed)
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

    def _on_weights_changed(self, value: str) -> None:
        self.checkpoint.enabled = value == CHECKPOINT_WEIGHTS

    # ---------------------------------------------------------------- running
    @property
    def worker(self):
        """The running worker, or None."""
        return self._worker

    @property
    def is_running(self) -> bool:
        return self._worker is not None

    def _selected_weights(self) -> Any:
        if self.weights.value != CHECKPOINT_WEIGHTS:
            return None
        path = self.checkpoint.value
        if path is None or str(path) in ("", "."):
            raise JobError("choose a checkpoint file, or select the bundled default weights")
        path = Path(path)
        if not path.is_file():
            raise JobError(f"checkpoint file not found: {path}")
        return path

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
        weights = self._selected_weights()
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
                "weights": "bundled default" if weights is None else str(weights),
                "plane": None if array.shape == full.shape else list(offset[:-2]),
                "lazy": lazy,
            }},
        }
        if not layer.rgb:
            layer_kwargs["colormap"] = layer.colormap
        for attr in ("units", "axis_labels"):
            if hasattr(layer, attr):
                layer_kwargs[attr] = getattr(layer, attr)
        return Job(array=array, reference=reference, rgb=layer.rgb, lazy=lazy, weights=weights,
                   tile=int(self.tile.value) or None, threads=int(self.threads.value),
                   device=str(self.device.value), bit_depth=int(self.bit_depth.value),
                   source_name=layer.name, offset=offset,
                   layer_kwargs=layer_kwargs)

    def run(self, _clicked: Any = None) -> None:
        """Start enhancing the selected layer (no-op while a job runs)."""
        if self._worker is not None:
            return
        try:
            job = self.build_job()
        except JobError as exc:
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
        try:
            added = self._viewer.add_image(outcome.data, **kwargs)
        except Exception as exc:  # noqa: BLE001
            logger.debug("adding the result layer failed", exc_info=True)
            self._final_status = "failed (see notification)"
            show_error(f"MSR-net: could not add the result layer: {exc}")
            return
        seconds = time.monotonic() - self._started
        how = "lazy, computed on display" if job.lazy else f"{seconds:.1f} s"
        self._final_status = f"added '{added.name}' ({how})"

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
        for name in ("image_layer", "weights", "device", "tile", "threads"):
            self[name].enabled = not running
        self.checkpoint.enabled = not running and self.weights.value == CHECKPOINT_WEIGHTS
        if running:
            self.whole_stack.enabled = False
        self.status.value = message

    def _on_destroyed(self, *_args: Any) -> None:
        if self._cancel_event is not None:
            self._cancel_event.set()
