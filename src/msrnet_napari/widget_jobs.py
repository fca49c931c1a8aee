"""The widget's work, without Qt: what to enhance, the job, and running it.

``plan_job`` picks the plane on screen or the whole stack; ``preview_decision``
and ``execute_job`` ask the core for the intensity decision
(:func:`msrnet_napari.scaling_for`) and only turn its errors into messages.
Unit-tested without a viewer; the Qt widget (``_widget.py``) is a thin shell.
No napari or Qt import here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .intensity import IntensityDecision, is_dask

logger = logging.getLogger(__name__)

OUTPUT_SUFFIX = " (MSR-net)"
#: whole-stack runs on dask data bigger than this stay lazy (computed on display)
LAZY_THRESHOLD_BYTES = 256 * 2**20
#: model choices of the widget: (label, value); "auto" lets the core pick by the data
MODEL_AUTO = "auto"
MODEL_CHECKPOINT = "checkpoint"


class JobError(ValueError):
    """A problem with the user's input, reported as a plain message (no traceback)."""


def base_level(layer_data: Any, multiscale: bool = False) -> Any:
    """The full-resolution array of a layer's data (level 0 of a multiscale pyramid)."""
    return layer_data[0] if multiscale else layer_data


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

    Returns ``(array, indexer)`` with ``array == data[indexer]``. For a single
    plane the leading axes are kept with length 1 (``slice(i, i + 1)``), so the
    result keeps the layer's dimensionality and can sit at the plane it came
    from. Slicing a dask array stays lazy.
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
    """Whole-stack runs of dask arrays bigger than ``threshold_bytes`` (default
    ``LAZY_THRESHOLD_BYTES``) are returned lazily, not computed."""
    if not (whole_stack and is_dask(array)):
        return False
    if threshold_bytes is None:
        threshold_bytes = LAZY_THRESHOLD_BYTES
    nbytes = int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize
    return nbytes > threshold_bytes


def parse_offset(text: str) -> Any:
    """The widget's offset field: "auto" (or empty) -> None; "100" or "100, 120" -> numbers."""
    text = (text or "").strip().lower()
    if text in ("", "auto"):
        return None
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise JobError(f"offset must be 'auto' or a number (one per channel), got {text!r}") \
            from None
    if not values or not all(np.isfinite(values)):
        raise JobError(f"offset must be 'auto' or finite numbers, got {text!r}")
    return values[0] if len(values) == 1 else values


def output_name(name: str) -> str:
    return f"{name}{OUTPUT_SUFFIX}"


@dataclass
class Job:
    """Everything the worker thread needs; built in the GUI thread by the widget."""

    array: Any  # what to enhance (numpy / dask / array-like), already sliced
    reference: Any  # data that decides the intensity mapping (None: ``array`` itself)
    rgb: bool
    lazy: bool
    weights: Any = None  # None = a bundled model (``model``), or a checkpoint path
    model: Optional[str] = None  # None = the core's default for the data
    tile: Optional[int] = None  # None = the device's default
    threads: int = 0
    device: str = "auto"
    bit_depth: int = 0  # photo model, integer layers: 0 = detect from the data
    offset: Any = None  # linear model: None = estimate, or number(s)
    gain: float = 1.0  # linear model: exposure ratio
    input_limits: Optional[tuple[float, float]] = None  # the source layer's contrast limits
    source_name: str = ""
    layer_kwargs: dict[str, Any] = field(default_factory=dict)

    def decision_options(self, intensity: str) -> dict[str, Any]:
        """enhance()/scaling_for() options for the checkpoint's intensity model."""
        if intensity == "linear":
            return {"offset": self.offset, "gain": float(self.gain)}
        options: dict[str, Any] = {}
        dtype = np.dtype(self.array.dtype)
        if dtype.kind in "ui" and self.bit_depth:
            options["bit_depth"] = int(self.bit_depth)
        if dtype.kind == "f":
            options["intensity_range"] = "data"  # the core maps (min, max) if outside [0, 1]
        return options


@dataclass
class Outcome:
    """What a worker returns: status 'ok' / 'cancelled' / 'error'."""

    status: str
    data: Any = None
    contrast_limits: Optional[tuple[float, float]] = None
    message: str = ""
    decision: Optional[IntensityDecision] = None


def contrast_limits_for(decision: IntensityDecision,
                        input_limits: Optional[tuple[float, float]]) -> tuple[float, float]:
    """Display range of the result. Linear model: the input layer's own limits (same
    units, so before and after compare at the same display). Photo model: the
    scaled range (bit depth full scale, or the float range)."""
    if decision.linear is not None and input_limits is not None:
        return (float(input_limits[0]), float(input_limits[1]))
    if decision.photo is not None:
        s = decision.photo.out_scaling
        return (float(s.low), float(s.high))
    ch = decision.linear.channels[0]
    return (ch.dark - 3 * (ch.noise if np.isfinite(ch.noise) else 0), ch.dark + ch.scale)


def _checkpoint_intensity(job: Job) -> str:
    from .models import resolve_model

    _, ckpt = resolve_model(job.model, job.weights, dtype=job.array.dtype, rgb=job.rgb)
    return ckpt.config.intensity


def preview_decision(job: Job) -> IntensityDecision:
    """The decision a run of ``job`` would take (raises JobError with the reason)."""
    from . import scaling_for

    try:
        intensity = _checkpoint_intensity(job)
        reference = job.array if job.reference is None else job.reference
        return scaling_for(reference, model=job.model, weights=job.weights, rgb=job.rgb,
                           **job.decision_options(intensity))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise JobError(_error_message(exc).removeprefix("MSR-net: ")) from None


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
    from . import enhance, scaling_for

    try:
        if cancel is not None and cancel.is_set():
            raise _cancelled_exception()
        array = job.array
        if not job.lazy and not isinstance(array, np.ndarray):
            array = np.asarray(array)  # computes a dask / zarr plane here, off the GUI thread
        intensity = _checkpoint_intensity(job)
        reference = array if job.reference is None else job.reference
        decision = scaling_for(reference, model=job.model, weights=job.weights, rgb=job.rgb,
                               **job.decision_options(intensity))
        kwargs = dict(model=job.model, weights=job.weights, scaling=decision, tile=job.tile,
                      threads=job.threads, device=job.device)
        if job.lazy:  # progress/cancel do not apply: blocks compute when napari draws them
            result = enhance(array, **kwargs)
        else:
            result = enhance(array, progress=progress, cancel=cancel, **kwargs)
        return Outcome("ok", result, contrast_limits_for(decision, job.input_limits),
                       decision=decision)
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


def model_choices() -> list[tuple[str, str]]:
    """(label, value) for the widget's model menu: auto, the installed bundled models,
    and a checkpoint file."""
    from .models import available_models, model_info

    choices = [("auto (by data: RGB photo / else microscopy)", MODEL_AUTO)]
    for name in available_models():
        choices.append((f"{name} - {model_info(name).serves.split(':')[0]}", name))
    choices.append(("checkpoint file", MODEL_CHECKPOINT))
    return choices
