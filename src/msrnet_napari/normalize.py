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
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.high > self.low
                and np.isfinite(1.0 / (self.high - self.low))):
            raise ValueError(
                f"intensity range must be finite with high > low, got ({self.low}, {self.high})"
            )


def check_dtype(dtype: np.dtype) -> None:
    """Raise ValueError for dtypes that cannot hold an image."""
    dtype = np.dtype(dtype)
    if dtype == bool or dtype.kind not in "uif":  # noqa: E721 (a numpy dtype, not a type)
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
        # signed integers hold one bit less: int8 white is 127, int16 at most 32767
        max_bits = 8 * dtype.itemsize - (1 if dtype.kind == "i" else 0)
        if bit_depth is None:
            if dtype.itemsize == 1:
                bit_depth = max_bits
            elif maximum is None:
                raise ValueError("maximum is needed to detect the bit depth")
            else:
                bit_depth = min(detect_bit_depth(maximum), max_bits)
        if isinstance(bit_depth, (bool, np.bool_)) or not isinstance(bit_depth, (int, np.integer)) \
                or not 1 <= bit_depth <= max_bits:
            raise ValueError(f"bit_depth must be an integer in 1..{max_bits} for {dtype}, got "
                             f"{str(bit_depth)[:40]}")
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
    """Map stored values to float32 in [0, 1] (clipped).

    Wide data (float64, 32/64-bit integers) and ranges whose reciprocal float32 cannot
    hold are computed in float64, so the low end is subtracted before any rounding."""
    data = np.asarray(data)
    factor = 1.0 / (scaling.high - scaling.low)
    wide = data.dtype.itemsize > 4 or (data.dtype.kind in "ui" and data.dtype.itemsize == 4) \
        or not np.isfinite(np.float32(factor)) or np.float32(factor) == 0
    work = np.float64 if wide else np.float32
    out = np.asarray(data, dtype=work) - work(scaling.low)
    out *= work(factor)
    np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32, copy=False)


def from_unit(unit: np.ndarray, scaling: Scaling, dtype: np.dtype) -> np.ndarray:
    """Map network output back to stored values of ``dtype`` (clipped, rounded for ints)."""
    dtype = np.dtype(dtype)
    # float64 for >= 32-bit integers: float32 rounds 2**32 - 1 up to 2**32, which wraps to 0
    work = np.float64 if dtype.itemsize >= 4 and (dtype.kind in "ui" or dtype.itemsize > 4) \
        else np.float32
    out = np.clip(unit, 0.0, 1.0, dtype=work)  # the only temporary; the rest is in place
    out *= work(scaling.high - scaling.low)
    out += work(scaling.low)
    if dtype.kind in "ui":
        return cast_to(out.astype(np.float64, copy=False), dtype)
    return out.astype(dtype, copy=False)


def cast_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float64 ``values`` -> ``dtype``: integers rounded and clipped to the dtype's range
    (in float64, so the white level never wraps), floats unchanged."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return values.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    np.rint(values, out=values)
    if info.bits < 64:
        np.clip(values, info.min, info.max, out=values)
        return values.astype(dtype, copy=False)
    # float64 cannot hold 2**63 - 1 or 2**64 - 1: the ends are set exactly, after the cast
    top, bottom = values >= float(info.max), values <= float(info.min)
    np.clip(values, np.nextafter(float(info.min), 0.0), np.nextafter(float(info.max), 0.0),
            out=values)
    out = values.astype(dtype)
    out[top], out[bottom] = info.max, info.min
    return out
