"""The intensity decision: how ONE whole array maps to network values and back.

This is the single place where scaling is decided (:func:`decide`, public as
:func:`msrnet_napari.scaling_for`); ``enhance()``,
the widget and the command line ask it and never recompute any part of it. The
decision is taken once per array - every plane of a stack, every dask block - and
recorded in an :class:`IntensityDecision`, which ``enhance(..., scaling=decision)``
reuses and ``describe()`` shows to users.

Two intensity models, chosen by the checkpoint's ``config.intensity``:

* ``"photo"`` (serves **photos**, sRGB-encoded): integers divided by the full scale
  of their bit depth (detected from the maximum, or ``bit_depth=``), floats in
  [0, 1] or ``intensity_range=``; then the model's exposure gain (from the mean of
  the whole array, in linear light or on the values) - :mod:`msrnet_napari.normalize`
  and :mod:`msrnet_napari.exposure`. Output clipped to [0, 1] and scaled back.
* ``"linear"`` (serves **scientific data**: microscopy, astronomy): per channel a
  dark level and a robust scale, no tone curve, the result in the input's units;
  ``gain=`` scales the signal above the dark level - :mod:`msrnet_napari.linear_intensity`.

Statistics are computed the same way for numpy and dask arrays (the same blocks'
sums, the same strided subsample), so a lazy result equals the eager one.
No torch, no napari.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Optional

import numpy as np

from .binning import requested_factor
from .checkpoint import Checkpoint
from .exposure import (
    ExposureSummary,
    apply_exposure_gain,
    exposure_statistic,
    exposure_summary,
    quantisation_step,
    summary_statistic,
)
from .layout import Layout, resolve_layout
from .linear_intensity import (
    PEDESTAL,
    ChannelMapping,
    LinearMapping,
    background_noise,
    decide_channel,
    estimate_dark_level,
    network_input,
    signal_noise,
    strided_sample,
)
from .normalize import Scaling, check_dtype, choose_scaling, from_unit, to_unit

__all__ = ["IntensityDecision", "PhotoMapping", "decide", "is_dask", "BAND_PIXELS"]

BAND_PIXELS = 2 << 20  # pixels per band of rows, for the engine and statistics (24 MiB float32 RGB)
NON_FINITE_INPUT = "image contains NaN or infinite values; replace them before enhancing"
INFINITE_INPUT = ("image contains infinite values; replace them before enhancing (NaN marks "
                  "missing pixels for the linear model)")


def is_dask(array: Any) -> bool:
    """True for dask arrays (the one check used by enhance, the widget and the CLI)."""
    return type(array).__module__.startswith("dask.") and hasattr(array, "map_overlap")


@dataclass(frozen=True)
class PhotoMapping:
    """The photo intensity model's decision: scaling to [0, 1] and the exposure gain."""

    scaling: Scaling
    out_scaling: Scaling
    exposure_gain: float
    exposure_space: str

    def describe(self) -> str:
        return (f"{self.scaling.description} [{self.scaling.low:g}, {self.scaling.high:g}] "
                f"-> [0, 1]; exposure gain {self.exposure_gain:.4g} ({self.exposure_space})")


@dataclass(frozen=True)
class IntensityDecision:
    """What :func:`scaling_for` decided for one array (frozen; pass it to enhance
    as ``scaling=`` to enhance parts of the array - planes, blocks - alike)."""

    model: str  # "photo", "microscopy" or "checkpoint" (weights=)
    intensity: str  # the checkpoint's intensity model: "photo" or "linear"
    rgb: bool
    channel_axis: Optional[int]
    out_dtype: np.dtype
    photo: Optional[PhotoMapping] = None
    linear: Optional[LinearMapping] = None

    def describe(self) -> str:
        body = self.photo.describe() if self.photo is not None else self.linear.describe()
        return f"model {self.model} ({self.intensity} intensities): {body}"

    # -- used by enhance() ---------------------------------------------------------
    @property
    def max_binning(self) -> int:
        """The largest binning factor of any channel (1 = none; sets the halo)."""
        return max((c.binning for c in self.linear.channels), default=1) if self.linear else 1

    def layout_for(self, shape: tuple[int, ...]) -> Layout:
        """Planes of an array of ``shape`` (the whole array or one of its blocks)."""
        if self.intensity == "linear" and self.rgb:  # colour axis = channels, moved first
            shape = (shape[-1], *shape[:-1])
            return resolve_layout(shape, rgb=False, channel_axis=0)
        return resolve_layout(shape, rgb=self.rgb, channel_axis=self.channel_axis)


@dataclass(frozen=True)
class IntensityOptions:
    """The intensity keywords of :func:`msrnet_napari.enhance` / ``scaling_for``, bundled
    once (None = not given; their meaning is documented on ``enhance``)."""

    rgb: Optional[bool] = None
    channel_axis: Optional[int] = None
    bit_depth: Optional[int] = None
    intensity_range: Optional[tuple[float, float]] = None
    exposure_gain: Optional[float] = None
    offset: Any = None
    gain: Optional[float] = None
    dtype: Any = None
    binning: Any = None

    def given(self) -> list[str]:
        """The names of the options that were given (not None), sorted."""
        return sorted(f.name for f in fields(self) if getattr(self, f.name) is not None)


def decide(array: Any, checkpoint: Checkpoint, options: IntensityOptions, *,
           model: str = "checkpoint") -> IntensityDecision:
    """Decide the intensity mapping of the whole ``array`` (numpy or dask) for ``checkpoint``
    (``model`` is only the label recorded in the decision).

    Raises ValueError with the reason for anything that cannot be enhanced.
    The options are those of :func:`msrnet_napari.enhance`.
    """
    rgb, channel_axis, dtype = options.rgb, options.channel_axis, options.dtype
    bit_depth, intensity_range = options.bit_depth, options.intensity_range
    exposure_gain, offset, gain = options.exposure_gain, options.offset, options.gain
    binning = options.binning
    check_dtype(array.dtype)
    layout = resolve_layout(tuple(array.shape), rgb=rgb, channel_axis=channel_axis)
    out_dtype = np.dtype(dtype) if dtype is not None else np.dtype(array.dtype)
    check_dtype(out_dtype)
    intensity = checkpoint.config.intensity
    base = dict(model=model, intensity=intensity, rgb=layout.rgb,
                channel_axis=layout.channel_axis, out_dtype=out_dtype)
    if intensity == "linear":
        for name, value in (("bit_depth", bit_depth), ("exposure_gain", exposure_gain)):
            if value is not None:
                raise ValueError(f"{name} applies to the photo intensity model; the {model} "
                                 "model is linear (use offset= and gain=)")
        decision = IntensityDecision(**base)
        return replace(decision, linear=_linear_mapping(
            array, decision, offset=offset, gain=gain, intensity_range=intensity_range,
            binning=binning, noise_input=checkpoint.config.noise_input))
    for name, value in (("offset", offset), ("gain", gain), ("binning", binning)):
        if value is not None:
            raise ValueError(f"{name} applies to the linear (microscopy) intensity model; the "
                             f"{model} model is for photos (use intensity_range= / exposure_gain=)")
    return IntensityDecision(**base, photo=_photo_mapping(
        array, layout, checkpoint, out_dtype, bit_depth=bit_depth,
        intensity_range=intensity_range, exposure_gain=exposure_gain))


# --------------------------------------------------------------------------- photo

def _photo_mapping(array, layout: Layout, checkpoint: Checkpoint, out_dtype: np.dtype, *,
                   bit_depth, intensity_range, exposure_gain) -> PhotoMapping:
    dtype = np.dtype(array.dtype)
    lo = hi = None
    if isinstance(intensity_range, str):
        if intensity_range != "data":
            raise ValueError(f"intensity_range must be (low, high) or 'data', got "
                             f"{intensity_range[:20]!r}")
        # "data": the standard rule where it applies, else the data's (min, max)
        lo, hi = _extremes(array)
        intensity_range = None
        if dtype.kind == "f" and not (lo >= 0.0 and hi <= 1.0):
            if not hi > lo:
                raise ValueError(f"the image is constant ({lo:g}) and outside [0, 1]; "
                                 "nothing to enhance")
            intensity_range = (lo, hi)
    if intensity_range is None and lo is None:  # one min/max pass: checks every value
        lo, hi = _extremes(array)
    scaling = choose_scaling(dtype, minimum=lo, maximum=hi, bit_depth=bit_depth,
                             intensity_range=intensity_range)
    if bit_depth is not None and hi is not None and hi > scaling.high:
        raise ValueError(f"values up to {hi:g} do not fit the chosen {int(bit_depth)}-bit "
                         "range; pick a larger bit_depth or let it be detected")
    # a float output dtype for integer input returns [0, 1] values
    same_scale = out_dtype.kind == dtype.kind or out_dtype.kind in "ui"
    out_scaling = scaling if same_scale else Scaling(0.0, 1.0, "unit")
    config = checkpoint.config
    if exposure_gain is None:
        if config.exposure_target <= 0:
            exposure_gain = 1.0  # no pass over the data
        elif config.exposure_statistic == "mean" and config.max_gain_rule == "fixed":
            total, count = _exposure_sums(array, layout, scaling, config.exposure_space)
            exposure_gain = config.exposure_gain(total / count)  # the rule before v2
        else:  # v2 rule: the statistic and the quantisation step from one summary pass
            summary = _exposure_sums(array, layout, scaling, config.exposure_space,
                                     summary=True)
            statistic = summary_statistic(summary.counts, summary.sums,
                                          config.exposure_statistic, config.exposure_trim)
            integer_step = (1.0 / (scaling.high - scaling.low) if dtype.kind in "ui" else None)
            exposure_gain = config.exposure_gain(
                float(statistic), quantisation_step(summary.grid_error, integer_step))
    exposure_gain = _positive("exposure_gain", exposure_gain)
    return PhotoMapping(scaling, out_scaling, exposure_gain, config.exposure_space)


def _extremes(array) -> tuple[float, float]:
    """(min, max) of the whole array; NaN/inf are refused here, once."""
    if is_dask(array):
        import dask

        lo, hi = (float(v) for v in dask.compute(array.min(), array.max()))
    else:
        lo, hi = float(np.min(array)), float(np.max(array))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(NON_FINITE_INPUT)
    return lo, hi


def _per_block(array, layout: Layout, fn):
    """``fn`` of every block of the colour channels of the whole array: numpy in bands of
    rows of each plane, dask per chunk. The statistics passes of both use this."""
    colour = array[..., :3] if layout.rgb else array
    if is_dask(colour):
        import dask

        return dask.compute(*[dask.delayed(fn)(b) for b in colour.to_delayed().ravel()])
    planes = layout.to_planes(np.asarray(array))
    rows = max(1, BAND_PIXELS // max(1, layout.plane_shape[1]))
    return [fn(plane[r:r + rows][..., :3] if layout.rgb else plane[r:r + rows])
            for plane in planes for r in range(0, plane.shape[0], rows)]


def _exposure_sums(array, layout: Layout, scaling: Scaling, space: str, summary: bool = False):
    """(sum, count) of the exposure statistic over the colour channels of the whole
    array, summed over blocks (numpy bands or dask chunks alike). With ``summary``: the
    :class:`~msrnet_napari.exposure.ExposureSummary` of the whole array instead
    (histogram sums add up over any blocks, so numpy and dask agree)."""
    if summary:
        return ExposureSummary.combine(_per_block(
            array, layout, lambda block: exposure_summary(to_unit(block, scaling), space)))
    parts = _per_block(array, layout,
                       lambda block: exposure_statistic(to_unit(block, scaling), space))
    return float(sum(s for s, _ in parts)), int(sum(n for _, n in parts))


def _positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {type(value).__name__}") from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return v


# --------------------------------------------------------------------------- linear

def _linear_mapping(array, decision: IntensityDecision, *, offset, gain, intensity_range,
                    binning=None, noise_input: bool = False) -> LinearMapping:
    layout = decision.layout_for(tuple(array.shape))
    work = np.moveaxis(array, -1, 0) if decision.rgb else array
    if layout.channel_axis is None:
        views = [work]
    else:
        views = [_take(work, layout.channel_axis, c) for c in range(layout.shape[layout.channel_axis])]
    offsets = _per_channel("offset", offset, len(views))
    integer = np.dtype(array.dtype).kind in "ui"
    channels = []
    if isinstance(intensity_range, str) and intensity_range == "data":
        intensity_range = None  # the linear model always decides from the data
    for view, dark in zip(views, offsets):
        if intensity_range is not None:
            low, high = (float(v) for v in intensity_range)
            if not (np.isfinite(low) and np.isfinite(high) and high > low):
                raise ValueError(f"intensity_range must be finite with high > low, got "
                                 f"({low:g}, {high:g})")
            # the range is given, not decided: "auto" keeps the full resolution; a
            # noise_input network is still told the noise, so only then it is estimated
            mapping = ChannelMapping(dark=low, scale=high - low, dark_given=True,
                                     binning=requested_factor(binning) or 1)
            if noise_input:
                sample, plane = _sample(view), noise_plane(view)
                mapping = replace(
                    mapping, noise=estimate_dark_level(sample)[1] if sample.size else float("nan"),
                    signal_noise=signal_noise(plane, low, high - low),
                    background_noise=background_noise(plane))
            channels.append(mapping)
            continue
        sample = _sample(view)
        channels.append(decide_channel(sample, integer=integer, dark=dark, binning=binning,
                                       plane=noise_plane(view)))
    return LinearMapping(tuple(channels), gain=1.0 if gain is None else _positive("gain", gain),
                         noise_input=noise_input)


def _sample(view) -> np.ndarray:
    """The strided sample of a channel's known values (linear_intensity.strided_sample)."""
    nd = view.ndim
    sample = strided_sample(view, (nd - 2, nd - 1))
    return known_values(np.asarray(sample.compute() if is_dask(sample) else sample))


def noise_plane(view, size: int = 1024) -> np.ndarray:
    """A central crop (at most size x size) of the middle plane: the pixels the noise
    estimates look at (neighbours are needed, so not the strided sample); the microscopy
    trainer takes its real pairs' from here too."""
    lead = tuple(n // 2 for n in view.shape[:-2])
    h, w = view.shape[-2:]
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    crop = view[lead + (slice(y0, y0 + size), slice(x0, x0 + size))]
    return np.asarray(crop.compute() if is_dask(crop) else crop)


def _take(array, axis: int, index: int):
    sl = [slice(None)] * array.ndim
    sl[axis] = index
    return array[tuple(sl)]


def _per_channel(name: str, value: Any, n: int) -> list[Optional[float]]:
    if value is None or (isinstance(value, str) and value == "auto"):
        return [None] * n
    if np.ndim(value) == 0:
        values = [value] * n
    else:
        values = list(np.asarray(value, dtype=object).ravel())
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} values for {n} channels")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be a number (or 'auto'), got {type(v).__name__}")
        if not np.isfinite(float(v)):
            raise ValueError(f"{name} must be finite, got {float(v)!r}")
        out.append(float(v))
    return out


# --------------------------------------------------------------------------- plane I/O

class PlaneIO:
    """Per plane: stored values -> network input (H x W x 3 float32) and network
    output -> stored values, under one decision. Used by enhance()'s band loop."""

    def __init__(self, decision: IntensityDecision, layout: Layout) -> None:
        self.decision, self.layout = decision, layout
        if decision.linear is not None:
            n_ch = len(decision.linear.channels)
            self.planes_per_channel = max(1, layout.n_planes // n_ch)

    def to_network(self, i: int, block: np.ndarray) -> np.ndarray:
        d = self.decision
        missing = np.isnan(block) if block.dtype.kind == "f" else None
        if d.linear is not None:
            unit = self._channel(i).to_network(block)
            if missing is not None and missing.any():  # missing pixels: the dark level
                unit[missing] = PEDESTAL
            return network_input(unit, self.condition(i))
        if missing is not None and missing.any():
            raise ValueError(NON_FINITE_INPUT)
        p = d.photo
        rgb = self.layout.rgb
        unit = to_unit(block[..., :3] if rgb else block, p.scaling)
        if not rgb:
            unit = np.repeat(unit[..., None], 3, axis=-1)
        unit = np.ascontiguousarray(unit, dtype=np.float32)
        if p.exposure_gain != 1.0:
            unit = apply_exposure_gain(unit, p.exposure_gain, p.exposure_space)
        return unit

    def condition(self, i: int) -> Optional[tuple[float, float]]:
        """The noise level plane ``i``'s network input carries (``noise_input`` models,
        for the plane's binning factor: ChannelMapping.noise_condition), else None."""
        linear = self.decision.linear
        if linear is None or not linear.noise_input:
            return None
        channel = self._channel(i)
        return channel.noise_condition(channel.binning)

    def binning(self, i: int) -> int:
        """The binning factor of plane ``i`` (1 = full resolution)."""
        return self._channel(i).binning if self.decision.linear is not None else 1

    def write(self, i: int, result: np.ndarray, raw: np.ndarray, out: np.ndarray) -> None:
        """Store the network output ``result`` (rows matching ``raw``) into ``out``."""
        d = self.decision
        if d.linear is not None:
            out[...] = self._channel(i).restore(result.mean(axis=-1), raw, d.out_dtype,
                                                d.linear.gain)
            if raw.dtype.kind == "f":
                missing = np.isnan(raw)
                if missing.any():  # missing in, missing out
                    if out.dtype.kind != "f":
                        raise ValueError(f"the image has missing (NaN) pixels, which "
                                         f"{out.dtype} cannot hold: pass a float dtype=")
                    out[missing] = np.nan
            return
        p = d.photo
        if self.layout.rgb:
            out[..., :3] = from_unit(result, p.out_scaling, d.out_dtype)
            if raw.shape[-1] == 4:  # alpha: unchanged, only re-typed
                out[..., 3] = from_unit(to_unit(raw[..., 3], p.scaling), p.out_scaling, d.out_dtype)
        else:
            out[...] = from_unit(result.mean(axis=-1), p.out_scaling, d.out_dtype)

    def _channel(self, i: int) -> ChannelMapping:
        return self.decision.linear.channels[min(i // self.planes_per_channel,
                                                 len(self.decision.linear.channels) - 1)]


def check_not_infinite(data: np.ndarray) -> None:
    """ValueError for float input data holding infinite values (NaN is decided later:
    missing pixels for the linear model, refused by the photo model)."""
    if data.size and data.dtype.kind == "f" and np.isinf(data).any():
        raise ValueError(INFINITE_INPUT)


def known_values(sample: np.ndarray) -> np.ndarray:
    """The sample without its missing (NaN) values, for the linear decision; infinite
    values and an all-missing channel are errors."""
    if sample.dtype.kind != "f":
        return sample
    check_not_infinite(sample)
    known = sample[~np.isnan(sample)]
    if sample.size and not known.size:
        raise ValueError("a channel has no known values (all NaN)")
    return known


def check_finite_output(result: np.ndarray) -> None:
    if not np.isfinite(result).all():
        raise FloatingPointError(
            "the network produced NaN or infinite values: the weights are unusable "
            "(e.g. a diverged training run)")


__all__ += ["PlaneIO", "check_finite_output", "check_not_infinite", "known_values"]
