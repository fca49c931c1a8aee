"""``enhance()``: the public, scriptable entry point.

Data path: validate -> layout (planes of H x W (x C)) -> normalise to [0, 1]
-> exposure gain (models with exposure normalisation) -> engine (C++/CUDA,
tiled) -> denormalise -> original shape and dtype.
Dask arrays take the same path lazily, block by block (``map_overlap`` with a
halo of the network's receptive radius, so the result equals the eager one).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Callable, Optional

import numpy as np

from .checkpoint import Checkpoint
from .exposure import apply_exposure_gain, exposure_statistic
from .layout import Layout, resolve_layout
from .normalize import Scaling, check_dtype, choose_scaling, from_unit, to_unit
from .weights import resolve_weights

ProgressFn = Callable[[int, int], Any]

_ENGINES: dict[tuple[str, str], Any] = {}
_ENGINES_LOCK = threading.Lock()


def enhance(
    array: Any,
    *,
    weights: Any = None,
    channel_axis: Optional[int] = None,
    rgb: Optional[bool] = None,
    bit_depth: Optional[int] = None,
    intensity_range: Optional[tuple[float, float]] = None,
    dtype: Any = None,
    exposure_gain: Optional[float] = None,
    tile: Optional[int] = None,
    threads: int = 0,
    device: str = "auto",
    progress: Optional[ProgressFn] = None,
    cancel: Any = None,
):
    """Enhance a low-light image with MSR-net.

    Parameters
    ----------
    array : array-like or dask array
        uint8/uint16/other integer or float data. 2-D gray (Y, X); RGB/RGBA
        (Y, X, 3|4); or an nD stack of either (Z, T, ... leading axes), which
        is enhanced plane by plane. A dask array gives a lazy dask array.
    weights : None, path or Checkpoint
        None uses the bundled default model; a path loads a PyTorch checkpoint
        with the safe loader (no code in it is ever executed).
    channel_axis : int, optional
        Axis of a non-RGB multichannel image; each channel is enhanced as gray.
    rgb : bool, optional
        Whether the last axis holds RGB(A) channels. Default: auto, i.e. True
        for ndim >= 3 with a last axis of 3 or 4.
    bit_depth, intensity_range :
        How values map to [0, 1]; see :mod:`msrnet_napari.normalize`.
        Integers: by detected bit depth (8, 10, 12, 14, 16, ...), so 12-bit
        data in uint16 uses 4095 as white. Floats: as given, must be in [0, 1].
    dtype : dtype, optional
        Output dtype. Default: the input dtype (same value scale). A float
        dtype for integer input returns values in [0, 1].
    exposure_gain : float, optional
        Only for models with exposure normalisation (``config.exposure_target``
        > 0, as the bundled default): the gain applied to the normalised input,
        in the model's ``config.exposure_space`` ("linear": in linear light, as
        a longer exposure; "display": on the values). Default:
        ``config.exposure_gain(mean)`` with the mean of the WHOLE array (all
        planes), so every plane of a stack gets the same mapping. Pass a number
        to reuse one gain across calls (e.g. plane by plane).
    tile, threads, device :
        Engine settings: tile edge in pixels (memory is bounded by the tile,
        not the image; None = the device's default, 256 on the CPU and 2048 on
        CUDA; 0 = whole plane), CPU threads (0 = all cores), and
        "auto" / "cpu" / "cuda" (auto = CUDA when available).
    progress : callable(done, total), optional
        Called after every tile of the whole job.
    cancel : object with ``is_set()``, optional
        E.g. a ``threading.Event``; when set, work stops and
        :class:`msrnet_napari.Cancelled` is raised.

    Gray data runs through the RGB model by replicating the plane into R, G, B
    and averaging the three outputs. Alpha is passed through unchanged.

    Returns
    -------
    ndarray (or dask array) of the same shape, with dtype ``dtype`` or the input's.
    """
    checkpoint = resolve_weights(weights)
    if _is_dask(array):
        return _enhance_dask(
            array, checkpoint=checkpoint, channel_axis=channel_axis, rgb=rgb,
            bit_depth=bit_depth, intensity_range=intensity_range, dtype=dtype,
            exposure_gain=exposure_gain, tile=tile, threads=threads, device=device,
        )
    data = _as_checked_array(array)
    layout = resolve_layout(data.shape, rgb=rgb, channel_axis=channel_axis)
    scaling = _scaling_for(data, bit_depth=bit_depth, intensity_range=intensity_range)
    out_dtype = np.dtype(dtype) if dtype is not None else data.dtype
    check_dtype(out_dtype)
    # a float output dtype for integer input returns [0, 1] values
    same_scale = out_dtype.kind == data.dtype.kind or out_dtype.kind in "ui"
    out_scaling = scaling if same_scale else Scaling(0.0, 1.0, "unit")
    if exposure_gain is None:
        exposure_gain = _auto_gain(checkpoint, data, layout, scaling)
    engine = _engine_for(checkpoint, device)
    return _enhance_planes(data, layout, scaling, out_scaling, out_dtype, engine,
                           gain=_checked_gain(exposure_gain), tile=tile, threads=threads,
                           progress=progress, cancel=cancel)


def _auto_gain(checkpoint: Checkpoint, data: np.ndarray, layout: Layout, scaling: Scaling) -> float:
    """The model's exposure gain for the whole array (1.0 without exposure normalisation)."""
    if checkpoint.config.exposure_target <= 0:
        return 1.0  # no pass over the data
    space = checkpoint.config.exposure_space
    return checkpoint.config.exposure_gain(_exposure_mean(data, layout, scaling, space))


def _exposure_mean(data: np.ndarray, layout: Layout, scaling: Scaling, space: str) -> float:
    """Mean normalised intensity of the whole array (colour channels only), in
    ``space`` (linear light or display values, see :mod:`msrnet_napari.exposure`).

    Computed in blocks of rows, so no float copy of the whole image is made.
    """
    planes = layout.to_planes(data)
    rows = max(1, BAND_PIXELS // max(1, layout.plane_shape[1]))
    total, count = 0.0, 0
    for plane in planes:
        for r in range(0, plane.shape[0], rows):
            block = plane[r:r + rows]
            unit = to_unit(block[..., :3] if layout.rgb else block, scaling)
            block_sum, block_count = exposure_statistic(unit, space)
            total += block_sum
            count += block_count
    return total / count


def _checked_gain(gain: Any) -> float:
    gain = float(gain)
    if not (np.isfinite(gain) and gain > 0):
        raise ValueError(f"exposure_gain must be a positive number, got {gain!r}")
    return gain


def exposure_gain_for(
    array: Any,
    *,
    weights: Any = None,
    rgb: Optional[bool] = None,
    channel_axis: Optional[int] = None,
    bit_depth: Optional[int] = None,
    intensity_range: Optional[tuple[float, float]] = None,
) -> float:
    """The exposure gain :func:`enhance` would apply to ``array`` (1.0 for models
    without exposure normalisation). Use it to enhance part of a stack (one
    plane) with the gain of the whole stack: ``enhance(plane, exposure_gain=g)``.
    """
    checkpoint = resolve_weights(weights)
    data = _as_checked_array(array)
    layout = resolve_layout(data.shape, rgb=rgb, channel_axis=channel_axis)
    scaling = _scaling_for(data, bit_depth=bit_depth, intensity_range=intensity_range)
    return _auto_gain(checkpoint, data, layout, scaling)


def _as_checked_array(array: Any) -> np.ndarray:
    data = np.asarray(array)
    check_dtype(data.dtype)
    if data.size and data.dtype.kind == "f" and not np.isfinite(data).all():
        raise ValueError("image contains NaN or infinite values; replace them before enhancing")
    return data


def _scaling_for(data: np.ndarray, *, bit_depth, intensity_range) -> Scaling:
    needs_extremes = intensity_range is None and (data.dtype.kind == "f" or bit_depth is None)
    lo = hi = None
    if needs_extremes and data.size:
        lo, hi = float(data.min()), float(data.max())
    return choose_scaling(data.dtype, minimum=lo, maximum=hi, bit_depth=bit_depth,
                          intensity_range=intensity_range)


BAND_TILES = 8  # at most this many rows of tiles go to the engine at once (see _bands)
BAND_PIXELS = 2 << 20  # ... and at most about this many pixels (24 MiB as float32 RGB)


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


def _enhance_planes(data, layout: Layout, scaling, out_scaling, out_dtype, engine, *,
                    gain, tile, threads, progress, cancel) -> np.ndarray:
    height, width = layout.plane_shape[:2]
    if tile is None:
        tile = engine.default_tile
    elif tile == 0:  # one tile per plane
        tile = max(height, width)
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 0:
        raise ValueError(f"tile must be a positive number of pixels or 0 (whole plane), got {tile!r}")
    tile = int(tile)
    planes = layout.to_planes(data)
    out = np.empty((layout.n_planes, *layout.plane_shape), dtype=out_dtype)
    bands = _bands(height, width, tile, engine.receptive_radius)
    tiles_x = -(-width // tile)
    band_tiles = [-(-(in1 - in0) // tile) * tiles_x for in0, in1, _, _ in bands]
    report = _JobProgress(layout.n_planes * sum(band_tiles), progress, cancel)
    from .engine import Cancelled

    for i in range(layout.n_planes):
        plane = planes[i]
        for (in0, in1, out0, out1), n_tiles in zip(bands, band_tiles):
            if cancel is not None and cancel.is_set():
                raise Cancelled("enhancement cancelled")
            rgb_in = _to_network_input(plane[in0:in1], layout.rgb, scaling)
            if gain != 1.0:
                rgb_in = apply_exposure_gain(rgb_in, gain, engine.config.exposure_space)
            result = engine.run(rgb_in, tile=tile, threads=threads, progress=report.callback())
            report.finish(n_tiles)
            result = result[out0 - in0:out1 - in0]
            if layout.rgb:
                out[i, out0:out1, :, :3] = from_unit(result, out_scaling, out_dtype)
                if plane.shape[-1] == 4:  # alpha: unchanged, only re-typed
                    alpha = to_unit(plane[out0:out1, :, 3], scaling)
                    out[i, out0:out1, :, 3] = from_unit(alpha, out_scaling, out_dtype)
            else:
                out[i, out0:out1] = from_unit(result.mean(axis=-1), out_scaling, out_dtype)
    return layout.from_planes(out)


class _JobProgress:
    """Turns the engine's per-call (done, total) into whole-job progress."""

    def __init__(self, total: int, progress, cancel) -> None:
        self.total, self.base, self.progress, self.cancel = total, 0, progress, cancel

    def callback(self):
        if self.progress is None and self.cancel is None:
            return None

        def report(done: int, _total: int) -> bool:
            if self.progress is not None:
                self.progress(self.base + done, self.total)
            return not (self.cancel is not None and self.cancel.is_set())

        return report

    def finish(self, n_tiles: int) -> None:
        self.base += n_tiles


def _to_network_input(plane: np.ndarray, rgb: bool, scaling: Scaling) -> np.ndarray:
    unit = to_unit(plane[..., :3] if rgb else plane, scaling)
    if not rgb:
        unit = np.repeat(unit[..., None], 3, axis=-1)
    return np.ascontiguousarray(unit, dtype=np.float32)


def _fingerprint(checkpoint: Checkpoint) -> str:
    h = hashlib.blake2b(repr(checkpoint.config).encode(), digest_size=16)
    for name in sorted(checkpoint.weights):
        h.update(name.encode())
        h.update(np.ascontiguousarray(checkpoint.weights[name], dtype=np.float32).tobytes())
    return h.hexdigest()


def _engine_for(checkpoint: Checkpoint, device: str):
    """Engines are cached by weight content, so dask blocks reuse one per process."""
    from .engine import Engine

    key = (_fingerprint(checkpoint), device)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            if len(_ENGINES) >= 4:
                _ENGINES.pop(next(iter(_ENGINES)))
            engine = _ENGINES[key] = Engine(checkpoint, device=device)
    return engine


# --------------------------------------------------------------------------- dask

def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.") and hasattr(array, "map_overlap")


def _enhance_dask(array, *, checkpoint, channel_axis, rgb, bit_depth, intensity_range,
                  dtype, exposure_gain, tile, threads, device):
    """Lazy enhancement: each block is enhanced with a halo of the receptive radius.

    Integer data wider than 8 bits needs its bit depth: pass ``bit_depth`` or
    ``intensity_range``, otherwise the maximum is computed here (one pass over
    the data). Float data is checked block by block when computed.
    """
    check_dtype(array.dtype)
    layout = resolve_layout(array.shape, rgb=rgb, channel_axis=channel_axis)
    wide_int = array.dtype.kind in "ui" and array.dtype.itemsize > 1
    if intensity_range is None and bit_depth is None and wide_int:
        import dask

        lo, hi = dask.compute(array.min(), array.max())
        scaling = choose_scaling(array.dtype, maximum=float(hi), minimum=float(lo))
        intensity_range = (scaling.low, scaling.high)
    out_dtype = np.dtype(dtype) if dtype is not None else array.dtype
    if exposure_gain is None and checkpoint.config.exposure_target > 0:
        exposure_gain = _dask_gain(array, layout, checkpoint, bit_depth, intensity_range)
    radius = checkpoint.config.receptive_radius
    y, x = layout.spatial_axes
    depth = {ax: 0 for ax in range(array.ndim)}
    depth[y] = depth[x] = radius
    if layout.rgb:  # whole RGB(A) pixels in every block
        array = array.rechunk({array.ndim - 1: -1})

    def block(b: np.ndarray) -> np.ndarray:
        return enhance(b, weights=checkpoint, channel_axis=layout.channel_axis, rgb=layout.rgb,
                       bit_depth=bit_depth, intensity_range=intensity_range, dtype=out_dtype,
                       exposure_gain=exposure_gain, tile=tile, threads=threads, device=device)

    # dask rechunks blocks smaller than the halo itself (allow_rechunk)
    return array.map_overlap(block, depth=depth, boundary="none", dtype=out_dtype,
                             meta=np.empty((0,) * array.ndim, dtype=out_dtype))


def _dask_gain(array, layout: Layout, checkpoint: Checkpoint, bit_depth, intensity_range) -> float:
    """Exposure gain from the whole lazy array (one pass), matching the eager rule."""
    if layout.rgb:
        array = array[..., :3]
    if array.dtype.kind == "f" and intensity_range is None:
        scaling = choose_scaling(array.dtype, maximum=1.0, minimum=0.0)  # checked per block
    else:
        scaling = choose_scaling(array.dtype, bit_depth=bit_depth, intensity_range=intensity_range,
                                 maximum=None if bit_depth or intensity_range else 2**8 - 1)
    space = checkpoint.config.exposure_space

    def stat(block: np.ndarray) -> np.ndarray:  # (sum, count) per block, summed below
        return np.array(exposure_statistic(to_unit(block, scaling), space),
                        dtype=np.float64).reshape((1,) * block.ndim + (2,))

    parts = array.map_blocks(stat, dtype=np.float64, new_axis=array.ndim,
                             chunks=(1,) * array.ndim + (2,)).compute()
    total, count = parts.reshape(-1, 2).sum(axis=0)
    return checkpoint.config.exposure_gain(total / count)
