"""The widget's work, without Qt: what to enhance, the job, and running it.

``plan_job`` picks the plane on screen or the whole stack; ``choose_layout`` says
how the layer's axes are read (the core's rule, :func:`msrnet_napari.layout.guess_layout`,
or the user's choice); ``preview_decision`` and ``run_job`` ask the core for the
intensity decision (:func:`msrnet_napari.scaling_for`) and only turn its errors
into messages. Settings persistence (``load_settings`` / ``save_settings``) lives
here too. Unit-tested without a viewer; the Qt widget (``_widget.py``) is a thin
shell. No napari or Qt import here.

Two ways a job runs (``Job.mode``):

* ``"array"``: one plane, or a small in-memory stack - enhanced in the worker
  thread, the result layer is added when it is done.
* ``"planes"``: a whole stack that is dask-backed or larger than
  ``FILL_THRESHOLD_BYTES`` - the decision is taken once for the whole stack, then
  the worker enhances it plane by plane (the plane on screen first) and yields
  every finished plane; the widget writes it into a result layer that appeared
  (as zeros) when Run was pressed. Cancel keeps the finished planes.

Results are always in memory (never lazy): a result bigger than
:func:`result_limit_bytes` is refused with a message that points to ``msrnet-enhance``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Optional, Sequence

import numpy as np

from .binning import MAX_FACTOR
from .intensity import IntensityDecision, is_dask
from .layout import LAYOUTS, MAX_CHANNELS_LAST, guess_layout, layout_options

logger = logging.getLogger(__name__)

OUTPUT_SUFFIX = " (MSR-net)"
#: whole-stack runs of in-memory stacks bigger than this fill the result plane by
#: plane (dask stacks always do)
FILL_THRESHOLD_BYTES = 64 * 2**20
#: results bigger than this are refused (None: half the physical memory, see
#: :func:`result_limit_bytes`)
MAX_RESULT_BYTES: Optional[int] = None
#: when the physical memory cannot be read
FALLBACK_RESULT_BYTES = 8 * 2**30
#: a dask block of planes bigger than this is read one plane at a time
BLOCK_READ_BYTES = 256 * 2**20
#: model choices of the widget: (label, value); "auto" lets the core pick by the data
MODEL_AUTO = "auto"
MODEL_CHECKPOINT = "checkpoint"
#: layout choices: "auto" = the core's rule (guess_layout), or one of LAYOUTS
LAYOUT_AUTO = "auto"
LAYOUT_LABELS = {"rgb": "RGB", "channels-last": "channels (last axis)", "planes": "planes"}
#: binning choices: "auto" = the core's rule (linear_intensity.choose_binning), or a factor
BINNING_AUTO = "auto"


class JobError(ValueError):
    """A problem with the user's input, reported as a plain message (no traceback)."""


# ------------------------------------------------------------------ threads

def auto_threads(cores: Optional[int] = None) -> int:
    """The widget's default CPU thread count: every core but one (at least 1), so
    the GUI thread always has a core to draw, zoom and scroll on."""
    cores = os.cpu_count() if cores is None else cores
    return max(1, int(cores or 1) - 1)


def resolve_threads(value: int, cores: Optional[int] = None) -> int:
    """The widget's "CPU threads" control: 0 = auto (:func:`auto_threads`), else as given."""
    value = int(value)
    return auto_threads(cores) if value <= 0 else value


# ------------------------------------------------------------------ layouts

def base_level(layer_data: Any, multiscale: bool = False) -> Any:
    """The full-resolution array of a layer's data (level 0 of a multiscale pyramid)."""
    return layer_data[0] if multiscale else layer_data


def _kind(layout: Any) -> str:
    """A layout kind; a bool means the napari-style rgb flag (True: "rgb", False: "planes")."""
    if isinstance(layout, (bool, np.bool_)):
        return "rgb" if layout else "planes"
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {str(layout)[:40]!r}")
    return str(layout)


def spatial_ndim(layout: Any) -> int:
    """Trailing axes that form one plane: (Y, X) for planes, (Y, X, C) for RGB and
    channels-last (``layout``: a kind, or the rgb flag)."""
    return 2 if _kind(layout) == "planes" else 3


def choose_layout(choice: str, shape: Sequence[int], dtype: Any,
                  intensity: Optional[str] = None) -> tuple[str, str]:
    """(kind, reason) for the widget's Layout control: "auto" asks the core's rule
    (:func:`~msrnet_napari.layout.guess_layout`); an explicit kind is checked against
    the shape (JobError when impossible or meaningless)."""
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if choice == LAYOUT_AUTO:
        kind, reason = guess_layout(shape, dtype, intensity)
        return kind, f"auto: {reason}"
    kind = _kind(choice)
    if kind == "rgb" and (nd < 3 or shape[-1] not in (3, 4)):
        raise JobError(f"layout RGB needs a last axis of 3 or 4 colours, got shape {shape}")
    if kind == "channels-last" and nd < 3:
        raise JobError(f"layout 'channels (last axis)' needs (Y, X, C) data, got shape {shape}")
    if kind == "planes" and nd >= 3 and shape[-1] <= MAX_CHANNELS_LAST:
        raise JobError(
            f"layout 'planes' would enhance {int(np.prod(shape[:-2]))} planes only "
            f"{shape[-1]} pixels wide (the last axis is X): choose 'channels (last axis)'"
            + (" or RGB" if shape[-1] in (3, 4) else "") + " - or auto")
    return kind, f"{LAYOUT_LABELS[kind]} (chosen)"


def validate_data(data: Any, layout: Any) -> None:
    """Raise JobError for arrays the network cannot take (before any work starts)."""
    kind = _kind(layout)
    shape = tuple(getattr(data, "shape", ()))
    dtype = np.dtype(getattr(data, "dtype", np.float64))
    need = spatial_ndim(kind)
    if len(shape) < need:
        what = {"rgb": "an RGB image needs (Y, X, 3|4)",
                "channels-last": "channels last need (Y, X, C)",
                "planes": "an image needs at least 2 axes (Y, X)"}[kind]
        raise JobError(f"data of shape {shape} cannot be enhanced: {what}")
    if kind == "rgb" and shape[-1] not in (3, 4):
        raise JobError(f"RGB data must have 3 or 4 channels in its last axis, got {shape[-1]}")
    if any(n == 0 for n in shape):
        raise JobError(f"data of shape {shape} is empty")
    if dtype == bool or dtype.kind not in "uif":  # noqa: E721 (a numpy dtype, not a type)
        raise JobError(f"unsupported data type {dtype}: MSR-net needs integer or float images")


# ------------------------------------------------------------------ planning

def plan_job(
    layer_data: Any,
    layout: Any,
    current_step: Sequence[int],
    whole_stack: bool,
    multiscale: bool = False,
) -> tuple[Any, tuple[slice, ...]]:
    """Choose what to enhance: the plane on screen or the whole stack.

    ``layout``: a kind ("rgb" / "channels-last" / "planes") or the rgb flag.
    Returns ``(array, indexer)`` with ``array == data[indexer]``. For a single
    plane the leading axes are kept with length 1 (``slice(i, i + 1)``), so the
    result keeps the layer's dimensionality and can sit at the plane it came
    from. Slicing a dask array stays lazy.
    """
    data = base_level(layer_data, multiscale)
    validate_data(data, layout)
    n_spatial = spatial_ndim(layout)
    n_lead = data.ndim - n_spatial
    full = (slice(None),) * data.ndim
    if whole_stack or n_lead == 0:
        return data, full
    lead = [slice(i, i + 1) for i in current_plane(data.shape[:n_lead], current_step)]
    indexer = tuple(lead) + (slice(None),) * n_spatial
    return data[indexer], indexer


def current_plane(lead_shape: Sequence[int], current_step: Sequence[int]) -> tuple[int, ...]:
    """The leading-axes index of the plane on screen, clipped into the stack."""
    n_lead = len(lead_shape)
    step = list(current_step)[:n_lead]
    if len(step) < n_lead:
        step = [0] * (n_lead - len(step)) + step
    return tuple(int(np.clip(int(round(float(i))), 0, n - 1)) for i, n in zip(step, lead_shape))


def plane_offset(indexer: Sequence[slice], rgb: bool) -> tuple[int, ...]:
    """Start index of every layer axis (napari's: all but the colour axis of an RGB
    layer; ``rgb`` is the layer's flag); 0 for the spatial axes."""
    n = len(indexer) - (1 if rgb else 0)
    return tuple(int(s.start or 0) for s in indexer[:n])


def nbytes_of(shape: Sequence[int], dtype: Any) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64)) * np.dtype(dtype).itemsize


def result_limit_bytes() -> int:
    """The largest result the widget makes: ``MAX_RESULT_BYTES``, or half the physical
    memory (``FALLBACK_RESULT_BYTES`` where it cannot be read)."""
    if MAX_RESULT_BYTES is not None:
        return int(MAX_RESULT_BYTES)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2
    except (AttributeError, OSError, ValueError):  # Windows has no sysconf
        pass
    try:  # Windows
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong),
                        ("total", ctypes.c_ulonglong), ("avail", ctypes.c_ulonglong),
                        ("page_total", ctypes.c_ulonglong), ("page_avail", ctypes.c_ulonglong),
                        ("virtual_total", ctypes.c_ulonglong),
                        ("virtual_avail", ctypes.c_ulonglong), ("extended", ctypes.c_ulonglong)]

        status = _Status()
        status.length = ctypes.sizeof(_Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore
            return int(status.total) // 2
    except Exception:  # noqa: BLE001 - any platform trouble: the fixed fallback
        pass
    return FALLBACK_RESULT_BYTES


def check_result_size(shape: Sequence[int], dtype: Any) -> None:
    """JobError when the result would not fit the in-memory limit (never lazy)."""
    need, limit = nbytes_of(shape, dtype), result_limit_bytes()
    if need > limit:
        raise JobError(
            f"the result would need {need / 2**30:.1f} GB of memory, more than the widget's "
            f"limit of {limit / 2**30:.1f} GB (half the physical memory): enhance the plane on "
            "screen, or write the whole stack to disk with msrnet-enhance (command line) or "
            "msrnet_napari.enhance() on a dask array in a script")


def run_mode(array: Any, layout: Any, whole_stack: bool,
             threshold_bytes: Optional[int] = None) -> str:
    """"planes" for whole-stack runs of dask stacks, or of stacks bigger than
    ``threshold_bytes`` (default ``FILL_THRESHOLD_BYTES``), else "array"."""
    n_lead = array.ndim - spatial_ndim(layout)
    planes = int(np.prod(array.shape[:n_lead], dtype=np.int64)) if n_lead > 0 else 1
    if not whole_stack or planes < 2:
        return "array"
    if is_dask(array):
        return "planes"
    limit = FILL_THRESHOLD_BYTES if threshold_bytes is None else threshold_bytes
    return "planes" if nbytes_of(array.shape, array.dtype) > limit else "array"


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


def binning_choices() -> list[tuple[str, str]]:
    """(label, value) for the widget's Binning menu: auto (the core decides per channel),
    1 (off: full resolution) and the factors the core accepts (values are strings, as
    they are saved in the settings)."""
    return [("auto", BINNING_AUTO), ("1 (off)", "1")] + [
        (str(f), str(f)) for f in range(2, MAX_FACTOR + 1)]


def parse_binning(value: Any) -> Any:
    """The Binning control's value as enhance() takes it: "auto" (or empty/None) -> "auto",
    "2" -> 2; anything else is passed on for the core to accept or refuse."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", BINNING_AUTO)):
        return BINNING_AUTO
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return value
    return value


def output_name(name: str) -> str:
    return f"{name}{OUTPUT_SUFFIX}"


# ------------------------------------------------------------------ the job

@dataclass
class Job:
    """Everything the worker thread needs; built in the GUI thread by the widget."""

    array: Any  # what to enhance (numpy / dask / array-like), already sliced
    reference: Any = None  # data that decides the intensity mapping (None: ``array``)
    layout: str = "planes"  # "rgb" | "channels-last" | "planes" (see layout.guess_layout)
    mode: str = "array"  # "array" (result at the end) | "planes" (fill plane by plane)
    weights: Any = None  # None = a bundled model (``model``), or a checkpoint path
    model: Optional[str] = None  # None = the core's default for the data
    tile: Optional[int] = None  # None = the device's default
    threads: int = 1  # resolved: never 0 (0 = all cores in the core)
    device: str = "auto"
    precision: str = "fp32"  # the CUDA engine's 3x3 convs: "fp32" or "tf32" (tensor cores)
    bit_depth: int = 0  # photo model, integer layers: 0 = detect from the data
    offset: Any = None  # linear model: None = estimate, or number(s)
    gain: float = 1.0  # linear model: exposure ratio
    binning: Any = BINNING_AUTO  # linear model: "auto" (the core's rule) or a factor 1..4
    input_limits: Optional[tuple[float, float]] = None  # the source layer's contrast limits
    first_plane: tuple[int, ...] = ()  # "planes" mode: this plane (on screen) goes first
    source_name: str = ""
    layer_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layout = _kind(self.layout)
        if self.mode not in ("array", "planes"):
            raise ValueError(f"mode must be 'array' or 'planes', got {self.mode!r}")

    @property
    def rgb(self) -> bool:
        return self.layout == "rgb"

    @property
    def lead_shape(self) -> tuple[int, ...]:
        """The stack axes (everything before the plane)."""
        return tuple(self.array.shape[:self.array.ndim - spatial_ndim(self.layout)])

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.lead_shape, dtype=np.int64))

    def layout_options(self) -> dict[str, Any]:
        return layout_options(self.layout)

    def decision_options(self, intensity: str) -> dict[str, Any]:
        """enhance()/scaling_for() options for the checkpoint's intensity model."""
        if intensity == "linear":
            return {"offset": self.offset, "gain": float(self.gain),
                    "binning": parse_binning(self.binning)}
        options: dict[str, Any] = {}
        dtype = np.dtype(self.array.dtype)
        if dtype.kind in "ui" and self.bit_depth:
            options["bit_depth"] = int(self.bit_depth)
        if dtype.kind == "f":
            options["intensity_range"] = "data"  # the core maps (min, max) if outside [0, 1]
        return options


@dataclass
class Outcome:
    """What a job returns: status 'ok' / 'cancelled' / 'error'. ``data`` is the result
    ("array" mode); "planes" mode counts the planes written instead."""

    status: str
    data: Any = None
    contrast_limits: Optional[tuple[float, float]] = None
    message: str = ""
    decision: Optional[IntensityDecision] = None
    planes_done: int = 0
    planes_total: int = 0


@dataclass
class Decided:
    """Yielded first by :func:`run_job`: the decision for the whole job."""

    decision: IntensityDecision
    contrast_limits: tuple[float, float]


@dataclass
class PlaneDone:
    """Yielded by :func:`run_job` in "planes" mode: write ``data`` at ``index``."""

    index: tuple[slice, ...]  # into the result (and the job's array)
    data: np.ndarray
    done: int  # planes finished so far
    total: int


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


def model_intensity(model: Optional[str], weights: Any, dtype: Any, rgb: bool) -> Optional[str]:
    """The intensity model ("photo" / "linear") the selected weights expect; None when
    the default model is meant (model and weights None) or the weights cannot be read."""
    if model is None and weights is None:
        return None
    from .models import resolve_model

    try:
        _, ckpt = resolve_model(model, weights, dtype=dtype, rgb=rgb)
    except Exception:  # noqa: BLE001 - reported when the job runs
        logger.debug("reading the model's intensity failed", exc_info=True)
        return None
    return ckpt.config.intensity


def _checkpoint_intensity(job: Job) -> str:
    from .models import resolve_model

    _, ckpt = resolve_model(job.model, job.weights, dtype=job.array.dtype, rgb=job.rgb)
    return ckpt.config.intensity


def _decide(job: Job) -> IntensityDecision:
    from . import scaling_for

    intensity = _checkpoint_intensity(job)
    reference = job.array if job.reference is None else job.reference
    return scaling_for(reference, model=job.model, weights=job.weights,
                       **job.layout_options(), **job.decision_options(intensity))


def preview_decision(job: Job) -> IntensityDecision:
    """The decision a run of ``job`` would take (raises JobError with the reason)."""
    try:
        return _decide(job)
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


def _cancelled_exception() -> BaseException:
    from . import Cancelled

    return Cancelled("enhancement cancelled")


def _compute(array: Any, threads: int) -> np.ndarray:
    """numpy data of ``array`` (a dask array is computed with at most ``threads``
    threads, leaving the GUI its core)."""
    if is_dask(array):
        return np.asarray(array.compute(scheduler="threads", num_workers=max(1, threads)))
    return np.asarray(array)


def _plane_blocks(job: Job) -> Iterator[tuple[tuple[slice, ...], list[tuple[int, ...]]]]:
    """Blocks of planes to read at once: ``(leading-axes slices, plane indices in it)``.

    For dask data the blocks follow its chunks along the stack axes (one read per
    chunk, not one per plane) unless a block is bigger than ``BLOCK_READ_BYTES``; for
    other data every plane is its own block. The block holding ``job.first_plane``
    comes first, then the others in order."""
    lead = job.lead_shape
    bounds: list[list[tuple[int, int]]] = []
    chunks = getattr(job.array, "chunks", None) if is_dask(job.array) else None
    plane_bytes = nbytes_of(job.array.shape[len(lead):], job.array.dtype)
    for ax, n in enumerate(lead):
        if chunks is not None:
            edges = np.concatenate([[0], np.cumsum(chunks[ax])]).astype(int)
            bounds.append([(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])])
        else:
            bounds.append([(i, i + 1) for i in range(n)])
    blocks = []
    for combo in np.ndindex(*[len(b) for b in bounds]):
        ranges = [bounds[ax][k] for ax, k in enumerate(combo)]
        planes = list(np.ndindex(*[b - a for a, b in ranges]))
        planes = [tuple(a + i for (a, _), i in zip(ranges, p)) for p in planes]
        if len(planes) * plane_bytes > BLOCK_READ_BYTES:
            blocks.extend(((tuple(slice(i, i + 1) for i in p)), [p]) for p in planes)
        else:
            blocks.append((tuple(slice(a, b) for a, b in ranges), planes))
    first = tuple(job.first_plane)
    if len(first) == len(lead):
        for k, (_, planes) in enumerate(blocks):
            if first in planes:
                blocks = blocks[k:] + blocks[:k]
                planes.remove(first)
                planes.insert(0, first)
                break
    yield from blocks


class _PlaneProgress:
    """Whole-job (done, total) tiles from the per-plane calls of enhance()."""

    def __init__(self, n_planes: int, progress) -> None:
        self.n, self.progress, self.per_plane, self.planes = n_planes, progress, 0, 0

    def __call__(self, done: int, total: int) -> None:
        self.per_plane = int(total)
        if self.progress is not None:
            self.progress(self.planes * self.per_plane + int(done), self.n * self.per_plane)

    def plane_done(self) -> None:
        self.planes += 1


def run_job(
    job: Job,
    progress: Optional[Callable[[int, int], Any]] = None,
    cancel: Any = None,
) -> Generator[Any, None, Outcome]:
    """Run one job (in the worker thread), as a generator: yields a :class:`Decided`
    first, then ("planes" mode) a :class:`PlaneDone` per finished plane, and returns
    the :class:`Outcome`. Never raises: errors become an Outcome."""
    from . import enhance

    done, total = 0, job.n_planes if job.mode == "planes" else 0
    decision = None
    try:
        if cancel is not None and cancel.is_set():
            raise _cancelled_exception()
        array = job.array
        if job.mode == "array":
            array = _compute(array, job.threads)  # a dask / zarr plane: off the GUI thread
            if job.reference is None:
                job = _replace_array(job, array)
        decision = _decide(job)
        limits = contrast_limits_for(decision, job.input_limits)
        yield Decided(decision, limits)
        kwargs = dict(model=job.model, weights=job.weights, scaling=decision, tile=job.tile,
                      threads=job.threads, device=job.device, precision=job.precision,
                      cancel=cancel)
        if job.mode == "array":
            result = enhance(array, progress=progress, **kwargs)
            return Outcome("ok", result, limits, decision=decision)
        report = _PlaneProgress(total, progress)
        n_spatial = spatial_ndim(job.layout)
        for block_index, planes in _plane_blocks(job):
            if cancel is not None and cancel.is_set():
                raise _cancelled_exception()
            block = _compute(array[block_index + (slice(None),) * n_spatial], job.threads)
            starts = [s.start for s in block_index]
            for plane in planes:
                local = tuple(slice(p - s, p - s + 1) for p, s in zip(plane, starts))
                result = enhance(block[local], progress=report, **kwargs)
                report.plane_done()
                done += 1
                yield PlaneDone(tuple(slice(p, p + 1) for p in plane), result, done, total)
        return Outcome("ok", None, limits, decision=decision, planes_done=done,
                       planes_total=total)
    except Exception as exc:  # noqa: BLE001 - reported to the user as a notification
        if _is_cancelled(exc):
            what = f" - {done} of {total} planes done" if job.mode == "planes" else ""
            return Outcome("cancelled", message=f"MSR-net: cancelled{what}", decision=decision,
                           planes_done=done, planes_total=total)
        logger.debug("MSR-net job failed", exc_info=True)
        return Outcome("error", message=_error_message(exc), decision=decision,
                       planes_done=done, planes_total=total)


def _replace_array(job: Job, array: Any) -> Job:
    from dataclasses import replace

    return replace(job, array=array)


def execute_job(
    job: Job,
    progress: Optional[Callable[[int, int], Any]] = None,
    cancel: Any = None,
    on_event: Optional[Callable[[Any], Any]] = None,
) -> Outcome:
    """Run ``job`` to the end (:func:`run_job` without a Qt worker); every yielded event
    goes to ``on_event``. "planes" mode: the planes are also assembled into
    ``Outcome.data`` (zeros where a plane was not done)."""
    gen = run_job(job, progress=progress, cancel=cancel)
    result = None
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            outcome = stop.value
            break
        if isinstance(event, PlaneDone):
            if result is None:
                result = np.zeros(job.array.shape, dtype=event.data.dtype)
            result[event.index] = event.data
        if on_event is not None:
            on_event(event)
    if job.mode == "planes" and outcome.data is None and result is not None:
        outcome.data = result
    return outcome


def result_dtype(job: Job) -> np.dtype:
    """The result's dtype (the widget never asks for another than the input's)."""
    return np.dtype(job.array.dtype)


# ------------------------------------------------------------------ choices

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


def precision_choices() -> list[tuple[str, str]]:
    """(label, value) for the widget's GPU precision menu (enhance()'s ``precision=``)."""
    return [("fp32 (as the CPU)", "fp32"), ("tf32 (tensor cores)", "tf32")]


def model_choices() -> list[tuple[str, str]]:
    """(label, value) for the widget's model menu: auto, the installed bundled models,
    and a checkpoint file."""
    from .models import available_models, model_info

    choices = [("auto (by data: RGB photo / else microscopy)", MODEL_AUTO)]
    for name in available_models():
        choices.append((f"{name} - {model_info(name).serves.split(':')[0]}", name))
    choices.append(("checkpoint file", MODEL_CHECKPOINT))
    return choices


def layout_choices(auto_label: str = "auto") -> list[tuple[str, str]]:
    """(label, value) for the widget's Layout menu; ``auto_label`` shows what auto decided."""
    return [(auto_label, LAYOUT_AUTO)] + [(LAYOUT_LABELS[k], k) for k in LAYOUTS]


# ------------------------------------------------------------------ settings

#: the widget's persisted settings and their defaults (Restore defaults goes back here)
DEFAULT_SETTINGS: dict[str, Any] = {
    "model": MODEL_AUTO, "checkpoint": "", "layout": LAYOUT_AUTO, "offset": "auto",
    "gain": 1.0, "binning": BINNING_AUTO, "bit_depth": 0, "device": "auto", "precision": "fp32",
    "tile": 0, "threads": 0, "whole_stack": False,
}
#: settings whose saved value must be one of these (else the default is kept)
_SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "binning": tuple(value for _, value in binning_choices()),
    "precision": tuple(value for _, value in precision_choices()),
}
SETTINGS_ENV = "MSRNET_NAPARI_CONFIG_DIR"
SETTINGS_FILE = "widget_settings.json"


def settings_path() -> Path:
    """Where the widget keeps its settings: ``$MSRNET_NAPARI_CONFIG_DIR/widget_settings.json``,
    else the user config folder (``~/.config/msrnet-napari`` on Linux, via platformdirs
    where installed)."""
    folder = os.environ.get(SETTINGS_ENV)
    if not folder:
        try:
            import platformdirs

            folder = platformdirs.user_config_dir("msrnet-napari", appauthor=False)
        except ImportError:
            folder = str(Path.home() / ".config" / "msrnet-napari")
    return Path(folder) / SETTINGS_FILE


def load_settings(path: Optional[Path] = None) -> dict[str, Any]:
    """The saved settings merged over the defaults; unknown keys, values of the wrong
    type and unreadable files are ignored (the default is kept)."""
    settings = dict(DEFAULT_SETTINGS)
    path = settings_path() if path is None else Path(path)
    try:
        if path.stat().st_size > 64 * 1024:
            raise ValueError("settings file too large")
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return settings
    except (OSError, ValueError) as exc:
        logger.warning("MSR-net: ignoring unreadable widget settings %s (%s)", path, exc)
        return settings
    if not isinstance(saved, dict):
        return settings
    for key, default in DEFAULT_SETTINGS.items():
        value = saved.get(key, default)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and np.isfinite(value)
            if ok and isinstance(default, int):
                ok = float(value).is_integer()
                value = int(value) if ok else value
        else:
            ok = isinstance(value, str) and len(value) < 4096
        if ok and key in _SETTING_CHOICES:
            ok = value in _SETTING_CHOICES[key]
        if ok:
            settings[key] = value
    return settings


def save_settings(settings: dict[str, Any], path: Optional[Path] = None) -> None:
    """Write the known keys of ``settings`` (atomically; failures are only logged)."""
    path = settings_path() if path is None else Path(path)
    data = {k: settings[k] for k in DEFAULT_SETTINGS if k in settings}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("MSR-net: could not save the widget settings to %s (%s)", path, exc)


def reset_settings(path: Optional[Path] = None) -> dict[str, Any]:
    """Forget the saved settings; returns the defaults."""
    path = settings_path() if path is None else Path(path)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("MSR-net: could not remove %s (%s)", path, exc)
    return dict(DEFAULT_SETTINGS)
