"""Flat-field linearity correction of the network, for the linear intensity model.

Serves **scientific imagery** only. A restoration must return a flat region at the
level it came in: the background at the dark level, a flat bright area at its value.
The network does so only approximately: fed flat fields, the bundled microscopy
weights return the pedestal (the dark level) 3.3e-4 too high and flat areas above the
reference level up to 2.3 % too bright (``benchmarks/linearity.py`` prints the curve).
Against the noise of a typical image that is nothing, but the linear model maps the
99.9th percentile to a fixed network value, so in a high-dynamic-range image (bright
cells or stars beside a faint background) the same 2e-4 is several times the
background's noise: measured, a 16-bit field with a 60,000-count object had its
background lifted by 5 (the previous weights) to 8 (these) noise standard deviations.

The fix is a property of the network alone, as a detector's linearity table is: its
*flat-field response* T(u), the output on a noise-free flat input of value u, is
measured once per engine on a grid of levels over the whole network range
(:data:`LEVELS`), and every output value y is mapped through the inverse, T^-1(y), per
output channel, before it goes back to the data's units. Flat regions are then restored
at their level to within the interpolation between the levels (~2e-4, see :data:`LEVELS`);
structures keep what the network made of them. T is made monotone before inverting (the
bundled weights' already is above u ~ 0.02, 0.6 scale below the dark level, where dead
ReLUs make it flat), so the correction never reorders intensities. A checkpoint whose flat
response is not close to the identity (slope below :data:`MIN_SLOPE` anywhere from
:data:`LIVE_FROM` up, or a deviation above :data:`MAX_DEVIATION`: not a restoration model,
e.g. untrained weights) is left uncorrected: inverting a flat or folded curve would merge
intensities. Photos are not corrected: the photo model's output is a display image whose
tone the network was trained to produce.

``MSRNET_FLAT_CORRECTION=0`` in the environment switches the correction off (for the
ablation rows of the benchmarks; never needed otherwise).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .linear_intensity import network_input

__all__ = ["LEVELS", "FlatResponse", "flat_outputs", "flat_response", "measure_flat_response",
           "enabled", "switched"]

#: network input levels of the calibration: 0.0025 apart over [0, 1], where the dark level
#: (0.25) and the reference level (0.65) lie, 0.025 up to the input ceiling (4). The
#: response has kinks (ReLUs) on a finer scale: linear interpolation between these levels
#: is within 2.4e-4 of it below 1 and 5.2e-4 above (bundled microscopy weights, against a
#: 0.001 grid; the previous weights: 1.2e-4 / 5.5e-4, and 4.2e-4 below 1 at 0.005 spacing),
#: against deviations from the identity of up to 6.4e-2
LEVELS = np.unique(np.concatenate([np.linspace(0.0, 1.0, 401),
                                   np.linspace(1.0, 4.0, 121)])).astype(np.float32)


#: the correction applies only to networks whose flat response is a near-identity: slope
#: at least this between calibration levels from LIVE_FROM up ...
MIN_SLOPE = 0.5
#: ... and |T(u) - u| at most this (the bundled microscopy weights: slope >= 0.83 there,
#: deviation 6.4e-2)
MAX_DEVIATION = 0.25
LIVE_FROM = 0.1  # below: 0.375 scale under the dark level, only noise (dead ReLUs, a knee)


_SWITCH = "MSRNET_FLAT_CORRECTION"


def enabled() -> bool:
    """False when ``MSRNET_FLAT_CORRECTION=0`` (ablations)."""
    return os.environ.get(_SWITCH, "1").strip() != "0"


@contextlib.contextmanager
def switched(on: bool) -> Iterator[None]:
    """The correction on or off (``MSRNET_FLAT_CORRECTION``) inside the block, restored
    afterwards: the benchmarks' ablation rows."""
    old = os.environ.get(_SWITCH)
    os.environ[_SWITCH] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ[_SWITCH]
        else:
            os.environ[_SWITCH] = old


@dataclass(frozen=True)
class FlatResponse:
    """T(u) of one network: ``response[c, i]`` is output channel c for a flat input of
    ``levels[i]`` on every input channel; non-decreasing in i."""

    levels: np.ndarray  # (L,) float64
    response: np.ndarray  # (C, L) float64, non-decreasing along L

    def invert(self, y: np.ndarray) -> np.ndarray:
        """T^-1 applied to a network output (H x W x C float32): each channel through
        its own curve; values beyond the calibrated range keep the end's offset."""
        y = np.asarray(y)
        out = np.empty(y.shape, np.float32)
        for c in range(y.shape[-1]):
            t = self.response[min(c, len(self.response) - 1)]
            v = y[..., c].astype(np.float64)
            w = np.interp(v, t, self.levels)
            low, high = v < t[0], v > t[-1]
            w[low] = v[low] - (t[0] - self.levels[0])
            w[high] = v[high] - (t[-1] - self.levels[-1])
            out[..., c] = w
        return out

    def max_deviation(self) -> float:
        """max |T(u) - u| over the grid: how far from linear the network is on flat fields."""
        return float(np.max(np.abs(self.response - self.levels[None, :])))

    def min_slope(self) -> float:
        """The smallest slope of T between calibration levels from :data:`LIVE_FROM` up."""
        live = self.levels >= LIVE_FROM
        return float(np.min(np.diff(self.response[:, live], axis=1)
                            / np.diff(self.levels[live])[None, :]))

    @property
    def usable(self) -> bool:
        """Whether T is the near-identity a restoration model has (see the module doc)."""
        return self.min_slope() >= MIN_SLOPE and self.max_deviation() <= MAX_DEVIATION


def flat_outputs(engine, levels: np.ndarray, width: int | None = None,
                 condition: tuple[float, float] | None = None) -> np.ndarray:
    """The raw outputs (L x C float64) of ``engine`` (:class:`msrnet_napari.engine.Engine`)
    for flat inputs at ``levels``: one strip of flat patches, one per level, each wider
    than the receptive field, read at each patch's centre (where the network sees only
    that level). ``condition``: the noise level a ``noise_input`` network is told
    (its input channels 1 and 2, :func:`msrnet_napari.linear_intensity.network_input`)."""
    radius = int(engine.receptive_radius)
    side = width or 2 * radius + 2  # the centre column is > radius from both neighbours
    rows = 2 * radius + 2
    strip = np.repeat(np.asarray(levels, np.float32), side)[None, :].repeat(rows, axis=0)
    image = network_input(strip, condition)
    out = np.asarray(engine.run(image, threads=1), dtype=np.float64)
    return out[rows // 2, side // 2::side, :]


def measure_flat_response(engine, width: int | None = None,
                          condition: tuple[float, float] | None = None) -> FlatResponse:
    """T(u) of ``engine`` at :data:`LEVELS` (:func:`flat_outputs`; for a ``noise_input``
    network at the noise level ``condition``), made monotone; all NaN (never
    :attr:`~FlatResponse.usable`) when the network returns non-finite values."""
    centre = flat_outputs(engine, LEVELS, width, condition)
    if not np.all(np.isfinite(centre)):
        centre = np.full_like(centre, np.nan)
    response = np.maximum.accumulate(centre.T, axis=1)
    return FlatResponse(levels=LEVELS.astype(np.float64), response=response)


#: per engine: {noise level (None for networks without noise_input): response or None}
_CACHE: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()
_MISSING = object()
_LOCK = threading.Lock()
#: noise levels kept per engine (a noise_input network's response depends on the level)
CACHED_CONDITIONS = 64


def flat_response(engine, condition: tuple[float, float] | None = None) -> FlatResponse | None:
    """The engine's :class:`FlatResponse`, measured on first use and kept with the
    engine (engines are cached per weights and device by :func:`msrnet_napari.enhance`,
    so each is measured once per process: 0.3 MP of network work, ~0.15 s on one core;
    a ``noise_input`` network once per noise level ``condition``, i.e. per image, since
    its response depends on it); None where it is not :attr:`~FlatResponse.usable`
    (no correction)."""
    key = None if condition is None else tuple(float(f"{c:.4g}") for c in condition)
    with _LOCK:
        found = _CACHE.setdefault(engine, {}).get(key, _MISSING)
    if found is _MISSING:
        measured = measure_flat_response(engine, condition=key)
        found = measured if measured.usable else None
        with _LOCK:
            kept = _CACHE.setdefault(engine, {})
            if len(kept) >= CACHED_CONDITIONS:
                kept.clear()
            kept[key] = found
    return found
