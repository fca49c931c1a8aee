"""``enhance()``: the public, scriptable entry point.

Data path, top to bottom: validate -> which model (:mod:`msrnet_napari.models`)
-> the intensity decision for the whole array (:func:`msrnet_napari.intensity.scaling_for`:
photo or linear model, decided once) -> per plane and band of rows: network input
-> engine (C++/CUDA, tiled) -> back to the data's units -> original shape and dtype.
Dask arrays take the same path lazily, block by block (``map_overlap`` with a
halo of the network's receptive radius and the whole array's decision, so the
result equals the eager one).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from typing import Any, Callable, Optional

import numpy as np

from .binning import halo, run_binned
from .checkpoint import Checkpoint
from .intensity import (
    BAND_PIXELS,
    IntensityDecision,
    IntensityOptions,
    PlaneIO,
    check_finite_output,
    check_not_infinite,
    decide,
    is_dask,
)
from .layout import resolve_layout
from .linear_intensity import UPPER_CLIP
from .linearity import enabled as flat_enabled
from .linearity import flat_response
from .models import resolve_model
from .normalize import check_dtype

ProgressFn = Callable[[int, int], Any]

MAX_THREADS = 1024
MAX_TILE = 1 << 16

_ENGINES: dict[tuple[str, str], Any] = {}
_ENGINES_LOCK = threading.Lock()


def enhance(
    array: Any,
    *,
    model: Optional[str] = None,
    weights: Any = None,
    channel_axis: Optional[int] = None,
    rgb: Optional[bool] = None,
    bit_depth: Optional[int] = None,
    intensity_range: Optional[tuple[float, float]] = None,
    offset: Any = None,
    gain: Optional[float] = None,
    binning: Any = None,
    dtype: Any = None,
    exposure_gain: Optional[float] = None,
    scaling: Optional[IntensityDecision] = None,
    tile: Optional[int] = None,
    threads: int = 0,
    device: str = "auto",
    precision: str = "fp32",
    progress: Optional[ProgressFn] = None,
    cancel: Any = None,
    return_decision: bool = False,
):
    """Enhance a low-light image with MSR-net.

    Parameters
    ----------
    array : array-like or dask array
        uint8/uint16/other integer or float data. Infinite values are refused;
        NaN marks missing pixels for the linear (microscopy) model - left out of
        its decision, restored as the dark level, NaN again in the (float)
        result - and is refused by the photo model. 2-D gray (Y, X); RGB/RGBA
        (Y, X, 3|4); channels-last (Y, X, C); or an nD stack of these (Z, T, ...
        leading axes), enhanced plane by plane. Undescribed shapes follow ONE rule,
        :func:`msrnet_napari.layout.guess_layout`: a last axis of 1-2 is channels;
        of 3-4 is RGB(A) colour for uint8/float data and channels for wider
        integers (a 16-bit composite); otherwise planes. A dask array gives a lazy
        dask array.
    model : "photo", "microscopy" or None
        A bundled model (:func:`msrnet_napari.available_models`). None picks by
        the data (:func:`msrnet_napari.models.default_model_for`): uint8/float
        RGB(A) -> "photo", everything else (gray, multichannel, wide-integer
        RGB-shaped data) -> "microscopy".
    weights : None, path or Checkpoint
        A PyTorch checkpoint instead of a bundled model, read with the safe
        loader (no code in it is ever executed); its config says which
        intensity model it expects.
    channel_axis : int, optional
        Axis of a non-RGB multichannel image (before Y, X, or -1 for channels
        last); each channel is enhanced as gray (and, with the linear model,
        gets its own dark level and scale).
    rgb : bool, optional
        Whether the last axis holds RGB(A) channels. Default: auto, i.e. True
        for ndim >= 3 with a last axis of 3 or 4.
    bit_depth, intensity_range, exposure_gain :
        Photo intensity model (see :mod:`msrnet_napari.normalize`): integers
        divided by the full scale of the bit depth (detected: 8, 10, 12, ...),
        floats as given in [0, 1] or ``intensity_range=(low, high)``; the
        model's exposure gain from the mean of the WHOLE array, or as given.
        ``intensity_range`` also serves the linear model: (dark level, dark + scale).
    offset, gain :
        Linear intensity model (microscopy): ``offset`` is the dark level
        (camera offset / background), "auto"/None = estimated robustly per
        channel, or a number (or one per channel); ``gain`` (default 1) scales
        the signal above the dark level, e.g. 10 for a 10x longer exposure.
        The result is in the input's units, clipped only to the dtype's range.
    binning : "auto", 1, 2, 3 or 4
        Linear intensity model: restore f x f binned pixels, cycle-spun back to
        the full pixel grid (:mod:`msrnet_napari.binning`; linear, no
        interpolation). "auto"/None: 2 for channels whose signal-to-noise ratio
        (scale / noise at the bright structures) is below
        :data:`msrnet_napari.linear_intensity.BINNING_SNR` (a few photons per
        pixel: ``benchmarks/calibrate_binning.py``), else 1; 1 always keeps the
        network's full resolution. The decision records it (``describe()``).
    scaling : IntensityDecision, optional
        A decision from :func:`msrnet_napari.scaling_for` (or an earlier call's
        ``return_decision``), e.g. the whole stack's, to enhance one plane alike.
    dtype : dtype, optional
        Output dtype. Default: the input dtype (same value scale). Photo model:
        a float dtype for integer input returns values in [0, 1].
    tile, threads, device :
        Engine settings: tile edge in pixels (memory is bounded by the tile,
        not the image; None = the device's default: on the CPU sized from its
        cache, 128-512 (``Engine.default_tile``), 2048 on CUDA; 0 = whole
        plane), CPU threads (0 = all cores, at most 1024), and "auto" / "cpu"
        / "cuda" (auto = CUDA when available).
    precision : "fp32" or "tf32"
        Arithmetic of the CUDA engine's 3x3 convolutions: "tf32" runs them on the
        GPU's tensor cores (compute capability >= 8.0; inputs and weights rounded to a
        10-bit mantissa, fp32 accumulation; meant for speed, not yet timed on a
        GPU; error bound in cpp/cuda/standalone_test.cu). Where TF32 cannot run (the CPU engine, an older
        GPU, a width other than 16/32) the result is computed in fp32. Default fp32:
        the same numbers as the CPU engine to ~1e-6.
    progress : callable(done, total), optional
        Called after every tile of the whole job.
    cancel : object with ``is_set()``, optional
        E.g. a ``threading.Event``; when set, work stops and
        :class:`msrnet_napari.Cancelled` is raised.
    return_decision : bool
        Return ``(result, decision)``: the :class:`IntensityDecision` used
        (which model, offsets, scales, gains; ``decision.describe()``).

    Returns
    -------
    ndarray (or dask array) of the same shape, with dtype ``dtype`` or the input's.
    """
    tile, threads = _checked_engine_args(tile, threads)
    from .engine import check_precision

    check_precision(precision)  # before the decision's work, not only when the engine starts
    lazy = is_dask(array)
    data = array if lazy else _as_checked_array(array)
    options = IntensityOptions(rgb, channel_axis, bit_depth, intensity_range, exposure_gain,
                               offset, gain, dtype, binning)
    if scaling is None:
        checkpoint, scaling = _decide(data, model, weights, options)
    else:
        checkpoint = _checkpoint_for(scaling, model, weights, data.dtype, options)
    if lazy:
        result = _enhance_dask(data, checkpoint, scaling, tile=tile, threads=threads,
                               device=device, precision=precision)
    else:
        with _engine_for(checkpoint, device, precision) as engine:
            result = _enhance_planes(data, scaling, engine, tile=tile, threads=threads,
                                     progress=progress, cancel=cancel)
    return (result, scaling) if return_decision else result


def scaling_for(
    array: Any,
    *,
    model: Optional[str] = None,
    weights: Any = None,
    rgb: Optional[bool] = None,
    channel_axis: Optional[int] = None,
    bit_depth: Optional[int] = None,
    intensity_range: Optional[tuple[float, float]] = None,
    exposure_gain: Optional[float] = None,
    offset: Any = None,
    gain: Optional[float] = None,
    binning: Any = None,
    dtype: Any = None,
) -> IntensityDecision:
    """The intensity decision :func:`enhance` takes for the whole ``array`` (numpy or
    dask): which model, and its scaling (photo: bit depth / range and exposure gain;
    linear: dark level and scale per channel, gain). Show it with ``.describe()``;
    pass it back as ``enhance(part, scaling=decision)`` to enhance parts alike.
    """
    data = array if is_dask(array) else _as_checked_array(array)
    options = IntensityOptions(rgb, channel_axis, bit_depth, intensity_range, exposure_gain,
                               offset, gain, dtype, binning)
    return _decide(data, model, weights, options)[1]


def _decide(data, model, weights, options: IntensityOptions,
            photo_only: bool = False) -> tuple[Checkpoint, Optional[IntensityDecision]]:
    """The model's checkpoint and its decision for ``data`` (None: ``photo_only`` and the
    checkpoint's intensity model is not photo)."""
    layout = resolve_layout(tuple(data.shape), rgb=options.rgb, channel_axis=options.channel_axis)
    label, checkpoint = resolve_model(model, weights, dtype=data.dtype, rgb=layout.rgb)
    if photo_only and checkpoint.config.intensity != "photo":
        return checkpoint, None
    return checkpoint, decide(data, checkpoint, options, model=label)


def _checkpoint_for(decision, model, weights, dtype, options) -> Checkpoint:
    """The checkpoint for an enhance() call that brings its own decision."""
    if not isinstance(decision, IntensityDecision):
        raise TypeError("scaling must be an IntensityDecision from scaling_for()")
    given = options.given()
    if given:
        raise ValueError(f"scaling= already holds the intensity decision; do not also pass "
                         f"{', '.join(given)}")
    if model is None and weights is None:
        if decision.model == "checkpoint":
            raise ValueError("this decision was made for a checkpoint: pass the same weights=")
        model = decision.model
    _, checkpoint = resolve_model(model, weights, dtype=dtype, rgb=decision.rgb)
    if checkpoint.config.intensity != decision.intensity:
        raise ValueError(f"scaling was decided for the {decision.intensity} intensity model, "
                         f"but these weights expect {checkpoint.config.intensity}")
    if decision.linear is not None and decision.linear.noise_input != checkpoint.config.noise_input:
        told = "read" if decision.linear.noise_input else "do not read"
        raise ValueError(f"scaling was decided for weights that {told} the noise level (config "
                         f"noise_input), these weights differ: decide again with them")
    return checkpoint


def _checked_engine_args(tile, threads) -> tuple[Optional[int], int]:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
            or not 0 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be an integer in 0..{MAX_THREADS} (0 = all cores), "
                         f"got {str(threads)[:40]}")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, (int, np.integer))
                             or not 0 <= tile <= MAX_TILE):
        raise ValueError(f"tile must be a number of pixels in 1..{MAX_TILE} or 0 (whole plane), "
                         f"got {str(tile)[:40]}")
    return (None if tile is None else int(tile)), int(threads)


def exposure_gain_for(
    array: Any,
    *,
    model: Optional[str] = None,
    weights: Any = None,
    rgb: Optional[bool] = None,
    channel_axis: Optional[int] = None,
    bit_depth: Optional[int] = None,
    intensity_range: Optional[tuple[float, float]] = None,
) -> float:
    """The exposure gain :func:`enhance` would apply to ``array`` (1.0 for models
    without exposure normalisation and for linear models). Prefer
    :func:`msrnet_napari.scaling_for`, whose decision covers every intensity model.
    """
    options = IntensityOptions(rgb, channel_axis, bit_depth, intensity_range)
    data = array if is_dask(array) else _as_checked_array(array)
    _, decision = _decide(data, model, weights, options, photo_only=True)
    if decision is None:
        return 1.0
    return decision.photo.exposure_gain


def _as_checked_array(array: Any) -> np.ndarray:
    """The input as numpy, its dtype checked; infinite values refused here, NaN by the
    photo model (PlaneIO.to_network) - the linear model takes NaN as missing pixels."""
    data = np.asarray(array)
    check_dtype(data.dtype)
    check_not_infinite(data)
    return data


BAND_TILES = 8  # at most this many rows of tiles go to the engine at once (see _bands),
# and at most about BAND_PIXELS pixels (intensity.BAND_PIXELS, shared with the statistics)


def _bands(height: int, width: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Row bands ``(in0, in1, out0, out1)`` that cover a plane.

    The engine gets one band at a time: input rows [in0, in1) produce the kept
    output rows [out0, out1), which lie ``halo`` rows (the receptive radius) away
    from every band edge that is not an image edge, so bands give exactly the
    whole-plane result. Only one band is ever held in float32, so memory stays
    bounded by the band, not the image (the input and output arrays aside).
    Each band's input is a whole number of tiles, so little work is repeated.
    """
    rows_of_tiles = max(1, min(BAND_TILES, BAND_PIXELS // (tile * width)))
    band_in = tile * max(rows_of_tiles, -(-4 * halo // tile))
    if height <= band_in:
        return [(0, height, 0, height)]
    bands, out0 = [], 0
    while out0 < height:
        in0 = max(0, out0 - halo)
        in1 = min(height, in0 + band_in)
        out1 = height if in1 == height else in1 - halo
        bands.append((in0, in1, out0, out1))
        out0 = out1
    return bands


def _enhance_planes(data: np.ndarray, decision: IntensityDecision, engine, *,
                    tile, threads, progress, cancel) -> np.ndarray:
    from .engine import Cancelled

    work = np.moveaxis(data, -1, 0) if (decision.intensity == "linear" and decision.rgb) else data
    layout = decision.layout_for(tuple(data.shape))
    io = PlaneIO(decision, layout)
    height, width = layout.plane_shape[:2]
    if tile is None:
        tile = engine.default_tile
    elif tile == 0:  # one tile per plane
        tile = max(height, width)
    planes = layout.to_planes(work)
    out = np.empty((layout.n_planes, *layout.plane_shape), dtype=decision.out_dtype)
    bands = _bands(height, width, tile, halo(decision.max_binning, engine.receptive_radius))
    tiles_x = -(-width // tile)
    band_tiles = [-(-(in1 - in0) // tile) * tiles_x for in0, in1, _, _ in bands]
    report = _JobProgress(layout.n_planes * sum(band_tiles), progress, cancel)
    correct = decision.linear is not None and flat_enabled()
    for i in range(layout.n_planes):
        plane = planes[i]
        flat = flat_response(engine, io.condition(i)) if correct else None
        for (in0, in1, out0, out1), n_tiles in zip(bands, band_tiles):
            if cancel is not None and cancel.is_set():
                raise Cancelled("enhancement cancelled")
            try:
                # the CPU engine decides how many of `threads` pay for this band
                # (and may cut the tile smaller): cpp/engine_cpu.cpp, "work split"
                result = run_binned(
                    lambda u, cb: engine.run(u, tile=tile, threads=threads, progress=cb),
                    io.to_network(i, plane[in0:in1]), io.binning(i), report.callback(n_tiles),
                    ceiling=UPPER_CLIP)
            except Cancelled:
                report.raise_callback_error()  # the callback's own error, not "cancelled"
                raise
            report.finish(n_tiles)
            result = result[out0 - in0:out1 - in0]
            check_finite_output(result)
            if flat is not None:  # the network's flat-field response undone (linearity.py)
                result = flat.invert(result)
            io.write(i, result, plane[out0:out1], out[i, out0:out1])
    result = layout.from_planes(out)
    return np.moveaxis(result, 0, -1) if work is not data else result


class _JobProgress:
    """Turns the engine's per-call (done, total) into whole-job progress."""

    def __init__(self, total: int, progress, cancel) -> None:
        self.total, self.base, self.progress, self.cancel = total, 0, progress, cancel
        self.error: Optional[BaseException] = None

    def callback(self, n_tiles: int):
        """The engine callback of one call worth ``n_tiles`` of the job's tiles.

        The engine counts its own tiles (it may cut the requested tile smaller);
        its (done, total) is scaled to ``n_tiles`` and reported when it grows.
        """
        if self.progress is None and self.cancel is None:
            return None
        last = [0]

        def report(done: int, total: int) -> bool:
            try:
                now = done * n_tiles // max(1, total)
                if self.progress is not None and now > last[0]:
                    last[0] = now
                    self.progress(self.base + now, self.total)
                return not (self.cancel is not None and bool(self.cancel.is_set()))
            except BaseException as exc:  # noqa: BLE001 - re-raised by enhance()
                self.error = exc
                return False  # stop the engine; the error surfaces instead of "cancelled"

        return report

    def raise_callback_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def finish(self, n_tiles: int) -> None:
        self.base += n_tiles


def _fingerprint(checkpoint: Checkpoint) -> str:
    h = hashlib.blake2b(repr(checkpoint.config).encode(), digest_size=16)
    for name in sorted(checkpoint.weights):
        h.update(name.encode())
        h.update(np.ascontiguousarray(checkpoint.weights[name], dtype=np.float32).tobytes())
    return h.hexdigest()


_IN_USE = threading.local()  # engine keys this thread is running (re-entrancy guard)


@contextlib.contextmanager
def _engine_for(checkpoint: Checkpoint, device: str, precision: str = "fp32"):
    """Engines are cached by weight content, so dask blocks reuse one per process.

    An engine runs one call at a time (other threads wait for it). A call re-entered
    from the same thread - a progress callback that calls enhance() with the same
    weights - gets a private engine instead of waiting for itself forever.
    """
    from .engine import Engine

    key = (_fingerprint(checkpoint), device, precision)
    busy = _IN_USE.__dict__.setdefault("keys", set())
    if key in busy:
        yield Engine(checkpoint, device=device, precision=precision)
        return
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            if len(_ENGINES) >= 4:
                _ENGINES.pop(next(iter(_ENGINES)))
            engine = _ENGINES[key] = Engine(checkpoint, device=device, precision=precision)
    busy.add(key)
    try:
        yield engine
    finally:
        busy.discard(key)


# --------------------------------------------------------------------------- dask

def _enhance_dask(array, checkpoint: Checkpoint, decision: IntensityDecision, *, tile, threads,
                  device, precision="fp32"):
    """Lazy enhancement: each block is enhanced with a halo of the receptive radius,
    under the whole array's decision (so the result equals the eager one)."""
    radius = halo(decision.max_binning, checkpoint.config.receptive_radius)
    layout = resolve_layout(tuple(array.shape), rgb=decision.rgb, channel_axis=decision.channel_axis)
    y, x = layout.spatial_axes
    depth = {ax: 0 for ax in range(array.ndim)}
    depth[y] = depth[x] = radius
    if layout.rgb:  # whole RGB(A) pixels in every block
        array = array.rechunk({array.ndim - 1: -1})
    if decision.linear is not None and layout.channel_axis is not None:  # all channels per block
        array = array.rechunk({layout.channel_axis: -1})
    out_dtype = decision.out_dtype

    def block(b: np.ndarray) -> np.ndarray:
        return enhance(b, weights=checkpoint, scaling=decision, tile=tile, threads=threads,
                       device=device, precision=precision)

    # dask rechunks blocks smaller than the halo itself (allow_rechunk)
    return array.map_overlap(block, depth=depth, boundary="none", dtype=out_dtype,
                             meta=np.empty((0,) * array.ndim, dtype=out_dtype))
