"""Intensity normalisation: input dtype <-> the [0, 1] float32 range the network expects.

Rules (also in the README):

* unsigned/signed integer data is divided by the full scale of its bit depth.
  uint8 -> 255. For wider integers the bit depth is *detected* from the data
  maximum and rounded up to 10, 12, 14, 16 (then 24, 32) bits, so 12-bit
  camera data stored in uint16 (max <= 4095) is divided by 4095, not 65535.
  Pass ``bit_depth=`` to override the detection (recommended for stacks whose
  planes are enhanced separately, and for dask arrays, where detection costs a
  pass over the data). Negative integers are rejected.
* float data is used as given and must lie in [0, 1]; otherwise pass
  ``intensity_range=(low, high)`` (e.g. the data's min and max, or a napari
  layer's contrast limits) and values are mapped linearly onto [0, 1].
* ``intensity_range`` works for integer data too and then replaces the
  bit-depth rule.

The network's output is clipped to [0, 1] and mapped back through the same
scaling; integer outputs are rounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_INTEGER_DEPTHS = (8, 10, 12, 14, 16, 24, 32)


@dataclass(frozen=True)
class Scaling:
    """Linear map between stored values and [0, 1]: unit = (x - low) / (high - low)."""

    low: float
    high: float
    description: str

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.high > self.low):
            raise ValueError(
                f"intensity range must be finite with high > low, got ({self.low}, {self.high})"
            )


def check_dtype(dtype: np.dtype) -> None:
    """Raise ValueError for dtypes that cannot hold an image."""
    dtype = np.dtype(dtype)
    if dtype == bool or dtype.kind not in "uif":
        raise ValueError(
            f"unsupported dtype {dtype}: expected unsigned/signed integers or floats"
        )


def detect_bit_depth(maximum: float) -> int:
    """Smallest common bit depth (8, 10, 12, 14, 16, 24, 32) that holds ``maximum``."""
    for bits in _INTEGER_DEPTHS:
        if maximum <= 2**bits - 1:
            return bits
    raise ValueError(f"integer values up to {maximum} exceed 32 bits")


def choose_scaling(
    dtype: np.dtype,
    *,
    maximum: float | None = None,
    minimum: float | None = None,
    bit_depth: int | None = None,
    intensity_range: tuple[float, float] | None = None,
) -> Scaling:
    """Decide how values of ``dtype`` map to [0, 1].

    ``maximum``/``minimum`` are the data's extremes; they are needed only to
    detect the bit depth of integer data wider than 8 bits and to check that
    float data lies in [0, 1] and integer data is non-negative.
    """
    dtype = np.dtype(dtype)
    check_dtype(dtype)
    if intensity_range is not None:
        low, high = (float(v) for v in intensity_range)
        return Scaling(low, high, f"intensity_range ({low:g}, {high:g})")
    if dtype.kind in "ui":
        if minimum is not None and minimum < 0:
            raise ValueError(
                f"{dtype} data has negative values (min {minimum}); pass "
                "intensity_range=(low, high) to say how to map it onto [0, 1]"
            )
        if bit_depth is None:
            if dtype.itemsize == 1:
                bit_depth = 8
            elif maximum is None:
                raise ValueError("maximum is needed to detect the bit depth")
            else:
                bit_depth = detect_bit_depth(maximum)
        if not isinstance(bit_depth, (int, np.integer)) or not 1 <= bit_depth <= 8 * dtype.itemsize:
            raise ValueError(f"bit_depth must be 1..{8 * dtype.itemsize} for {dtype}, got {bit_depth!r}")
        return Scaling(0.0, float(2**int(bit_depth) - 1), f"{int(bit_depth)}-bit integer")
    # float
    if bit_depth is not None:
        raise ValueError("bit_depth applies to integer data; use intensity_range for floats")
    if (maximum is not None and maximum > 1.0) or (minimum is not None and minimum < 0.0):
        raise ValueError(
            f"float data must lie in [0, 1] (found [{minimum:g}, {maximum:g}]); pass "
            "intensity_range=(low, high), e.g. (data.min(), data.max()), to rescale it"
        )
    return Scaling(0.0, 1.0, "float in [0, 1]")


def to_unit(data: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Map stored values to float32 in [0, 1] (clipped)."""
    out = np.asarray(data, dtype=np.float32)
    out = (out - np.float32(scaling.low)) * np.float32(1.0 / (scaling.high - scaling.low))
    return np.clip(out, 0.0, 1.0, out=out)


def from_unit(unit: np.ndarray, scaling: Scaling, dtype: np.dtype) -> np.ndarray:
    """Map network output back to stored values of ``dtype`` (clipped, rounded for ints)."""
    dtype = np.dtype(dtype)
    work = np.float64 if dtype.itemsize > 4 else np.float32
    out = np.clip(unit, 0.0, 1.0, dtype=work)  # the only temporary; the rest is in place
    out *= work(scaling.high - scaling.low)
    out += work(scaling.low)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        np.rint(out, out=out)
        np.clip(out, info.min, info.max, out=out)
    return out.astype(dtype, copy=False)
