"""Exposure normalisation: the whole-image gain applied before the network.

MSR-net sees only an 11-pixel neighbourhood, so on its own it cannot tell a
dim scene from a short exposure. A model trained with exposure normalisation
(``config.exposure_target > 0``) therefore gets its input re-exposed first, by
one gain computed from the mean of the WHOLE image (:meth:`MSRNetConfig.exposure_gain`):

* ``exposure_space = "display"``: the normalised (sRGB-encoded) values are
  multiplied by the gain: ``x * g``.
* ``exposure_space = "linear"``: the gain is applied in linear light, as a
  longer camera exposure would: ``srgb(g * linear(x))``, clipped at white.
  Its mean statistic is the linear-light mean. Because a camera's exposure
  scales linear light, this undoes an under-exposure exactly (up to noise,
  quantisation and clipping), whatever its size.

The gain rule (:func:`exposure_gain`, used by :meth:`MSRNetConfig.exposure_gain`, the
intensity decision and the PyTorch reference model alike) is
``clamp(target / statistic, 1, max_gain)``:

* ``config.exposure_statistic = "mean"`` (checkpoints before v2): the plain mean.
  ``"robust"``: the mean with the brightest ``exposure_trim`` fraction of the pixels
  clipped to the value below them (a winsorised mean), so that a lamp, the sun or
  a specular highlight does not decide the gain for the whole scene. It is taken
  from an :class:`ExposureSummary` (a histogram of the values with their sums per
  bin), which adds up over bands, planes and dask blocks exactly.
* ``config.max_gain_rule = "fixed"`` (before v2): ``max_gain`` is the constant
  :attr:`MSRNetConfig.max_exposure_gain`. ``"quantisation"``: ``max_gain`` is also
  bounded by what the data supports - the gain at which one quantisation step
  above black (``1/255`` for 8-bit data; :func:`quantisation_step`) re-exposed
  reaches ``config.black_step`` (a display value), and not more: a near-black
  8-bit image is not amplified until its codes become visible blotches. The step
  is at least ``config.noise_floor`` (in the exposure space's units), for data
  whose noise floor lies above their quantisation or whose quantisation is
  unknown (floats not on the 8-bit grid).

Works on numpy arrays and (for the PyTorch reference model) torch tensors;
torch is never imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .config import check_exposure_space

__all__ = ["srgb_to_linear", "linear_to_srgb", "exposure_statistic", "apply_exposure_gain",
           "ExposureSummary", "exposure_summary", "summary_statistic", "quantisation_step",
           "max_exposure_gain", "exposure_gain", "summary_gain", "image_exposure_gain",
           "EXPOSURE_BINS"]

#: histogram bins of an ExposureSummary, over the [0, 1] (display-encoded) input values;
#: every 8-bit code has a bin of its own, so the robust statistic of 8-bit data is exact
EXPOSURE_BINS = 4096
#: data whose values all lie within this many codes of the 8-bit grid k/255 are 8-bit data
GRID_TOLERANCE = 1e-3
EIGHT_BIT_STEP = 1.0 / 255.0

def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def srgb_to_linear(x):
    """Inverse sRGB transfer curve (IEC 61966-2-1), numpy or torch, x in [0, 1]."""
    if _is_torch(x):  # Tensor.where(c, y) is torch.where(c, self, y): no torch import here
        x = x.clamp(0, 1)
        return (x / 12.92).where(x <= 0.04045, ((x + 0.055) / 1.055) ** 2.4)
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x):
    """sRGB transfer curve, numpy or torch; input clipped to [0, 1]."""
    if _is_torch(x):
        x = x.clamp(0, 1)
        return (x * 12.92).where(x <= 0.0031308, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, x * 12.92,
                    1.055 * np.maximum(x, 1e-12) ** (1 / 2.4) - 0.055).astype(np.float32)


def exposure_statistic(unit: np.ndarray, space: str) -> tuple[float, int]:
    """(sum, count) of the values whose mean sets the gain, for a block of [0, 1] data.

    Returned as a sum so that callers can accumulate it over bands, planes or
    dask blocks without holding the whole image in float.
    """
    check_exposure_space(space)
    values = srgb_to_linear(unit) if space == "linear" else unit
    return float(np.sum(values, dtype=np.float64)), int(values.size)


def apply_exposure_gain(x, gain: float, space: str):
    """Re-expose [0, 1] data ``x`` (numpy float32 or torch) by ``gain`` in ``space``.

    numpy input is modified in place where possible and returned.
    """
    check_exposure_space(space)
    if space == "display":
        if _is_torch(x):
            return x * gain
        x *= np.float32(gain)
        return x
    return linear_to_srgb(srgb_to_linear(x) * gain)


# --------------------------------------------------------------------------- the gain rule

@dataclass(frozen=True)
class ExposureSummary:
    """What the gain rule needs from (a block of) an image: per bin of the input values
    (:data:`EXPOSURE_BINS` bins over [0, 1]) the pixel count and the sum of the statistic's
    values (linear light or display values), and the largest distance of a value from the
    8-bit grid (in codes). Summaries of blocks add up (``+`` / :meth:`combine`) to the
    summary of the whole image, whatever the blocks."""

    counts: np.ndarray  # int64 (..., EXPOSURE_BINS)
    sums: np.ndarray  # float64 (..., EXPOSURE_BINS)
    grid_error: float = 0.0

    def __add__(self, other: "ExposureSummary") -> "ExposureSummary":
        return ExposureSummary(self.counts + other.counts, self.sums + other.sums,
                               max(self.grid_error, other.grid_error))

    @staticmethod
    def combine(parts: Iterable["ExposureSummary"]) -> "ExposureSummary":
        parts = list(parts)
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    @property
    def mean(self) -> float:
        return float(self.sums.sum() / max(1, self.count))


def exposure_summary(unit: np.ndarray, space: str) -> ExposureSummary:
    """:class:`ExposureSummary` of a block of [0, 1] data (numpy, any shape: every value counts)."""
    check_exposure_space(space)
    unit = np.asarray(unit, dtype=np.float32)
    values = srgb_to_linear(unit) if space == "linear" else np.clip(unit, 0, 1)
    idx = np.rint(np.clip(unit, 0, 1).ravel() * np.float32(EXPOSURE_BINS - 1)).astype(np.intp)
    counts = np.bincount(idx, minlength=EXPOSURE_BINS).astype(np.int64)
    sums = np.bincount(idx, weights=values.ravel().astype(np.float64), minlength=EXPOSURE_BINS)
    codes = unit * np.float32(255.0)
    grid = float(np.max(np.abs(codes - np.rint(codes)))) if unit.size else 0.0
    return ExposureSummary(counts, sums, grid)


def summary_statistic(counts: np.ndarray, sums: np.ndarray, statistic: str = "mean",
                      trim: float = 0.0) -> np.ndarray:
    """The exposure statistic from per-bin counts and sums (leading axes = a batch).

    ``"mean"``: sum / count. ``"robust"``: winsorised mean - the brightest ``trim``
    fraction of the pixels counts with the value of the bin where that fraction
    begins (its mean value) instead of its own.
    """
    counts = np.asarray(counts, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    n = counts.sum(axis=-1)
    if statistic == "mean" or trim <= 0:
        return sums.sum(axis=-1) / np.maximum(n, 1)
    if statistic != "robust":
        raise ValueError(f"unknown exposure statistic {statistic!r}")
    k = trim * n  # pixels to clip, per image
    above = np.cumsum(counts[..., ::-1], axis=-1)[..., ::-1]  # pixels in bins >= b
    # j: the highest bin with (pixels in bins >= j) >= k, i.e. where the clipped part begins
    reach = above >= np.maximum(k, 1e-12)[..., None]
    j = counts.shape[-1] - 1 - np.argmax(reach[..., ::-1], axis=-1)
    j = np.where(reach.any(axis=-1), j, 0)
    take = lambda a, i: np.take_along_axis(a, i[..., None], axis=-1)[..., 0]  # noqa: E731
    below = np.cumsum(sums, axis=-1)
    s_below = np.where(j > 0, take(below, np.maximum(j - 1, 0)), 0.0)
    c_j, s_j = take(counts, j), take(sums, j)
    v_j = s_j / np.maximum(c_j, 1)
    n_above = take(above, j) - c_j  # pixels in bins > j, clipped to v_j
    return (s_below + s_j + n_above * v_j) / np.maximum(n, 1)


def quantisation_step(grid_error, integer_step: float | None = None):
    """The quantisation step of [0, 1] data: ``integer_step`` (1 / full scale) for integer
    data; for floats 1/255 when every value lies on the 8-bit grid (``grid_error``, in codes,
    below :data:`GRID_TOLERANCE`), else 0 (unknown: then only ``noise_floor`` bounds the gain)."""
    if integer_step is not None:
        return float(integer_step)
    return (grid_error < GRID_TOLERANCE) * EIGHT_BIT_STEP


def _min(a, b):
    if _is_torch(a) or _is_torch(b):
        return a.clamp(max=b) if _is_torch(a) else b.clamp(max=a)
    return np.minimum(a, b)


def max_exposure_gain(config, step=0.0):
    """The largest gain the rule allows for data with quantisation step ``step`` (in [0, 1]
    input units; a number, a numpy array or a tensor - one per image)."""
    fixed = config.max_exposure_gain
    if config.max_gain_rule == "fixed":
        return fixed if not (_is_torch(step) or np.ndim(step)) else step * 0 + fixed
    if config.exposure_space == "linear":
        top = float(srgb_to_linear(np.float32(config.black_step)))
        floor = srgb_to_linear(step) if _is_torch(step) else np.asarray(srgb_to_linear(step),
                                                                           np.float64)
    else:
        top, floor = float(config.black_step), step
    floor = floor.clamp_min(config.noise_floor) if _is_torch(floor) \
        else np.maximum(floor, config.noise_floor)
    bound = top / (floor.clamp_min(1e-30) if _is_torch(floor) else np.maximum(floor, 1e-30))
    bound = _min(bound, fixed)
    bound = bound.clamp_min(1.0) if _is_torch(bound) else np.maximum(bound, 1.0)
    return bound if _is_torch(bound) or np.ndim(bound) else float(bound)


def exposure_gain(config, statistic, step=0.0):
    """THE gain rule: ``clamp(target / statistic, 1, max_exposure_gain(config, step))``;
    1 when exposure normalisation is off. ``statistic`` and ``step`` may be numbers, numpy
    arrays or tensors (one per image)."""
    if config.exposure_target <= 0.0:
        return 1.0 if not (_is_torch(statistic) or np.ndim(statistic)) else statistic * 0 + 1.0
    hi = max_exposure_gain(config, step)
    if _is_torch(statistic):
        g = (config.exposure_target / statistic.clamp_min(1e-9)).clamp_min(1.0)
        return g.clamp(max=hi) if _is_torch(hi) else g.clamp_max(hi)
    g = np.minimum(np.maximum(config.exposure_target / np.maximum(statistic, 1e-9), 1.0), hi)
    return g if np.ndim(g) else float(g)


def summary_gain(config, summary: ExposureSummary, step: float | None = None) -> float:
    """The gain of the image that ``summary`` (in ``config.exposure_space``) describes."""
    stat = summary_statistic(summary.counts, summary.sums, config.exposure_statistic,
                             config.exposure_trim)
    q = step if step is not None else quantisation_step(summary.grid_error)
    return float(exposure_gain(config, float(stat), q))


def image_exposure_gain(config, unit: np.ndarray, step: float | None = None) -> float:
    """The gain of one whole image of [0, 1] values (numpy), as enhance() decides it for a
    float image: the configured statistic, the quantisation step detected (or ``step``)."""
    if config.exposure_target <= 0.0:
        return 1.0
    if config.exposure_statistic == "mean":
        total, count = exposure_statistic(unit, config.exposure_space)
        stat = total / max(count, 1)
        grid = 0.0
        if config.max_gain_rule != "fixed" and step is None:
            grid = exposure_summary(unit, config.exposure_space).grid_error
    else:
        return summary_gain(config, exposure_summary(unit, config.exposure_space), step)
    q = step if step is not None else quantisation_step(grid)
    return float(exposure_gain(config, stat, q))
