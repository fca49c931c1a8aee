"""Cycle-spun binning: the network applied to f x f binned pixels, for photon-starved data.

Serves **scientific imagery** (the linear intensity model only). At a few photons per
pixel the network's 1 + K pixel neighbourhood holds too few photons to tell structure
from noise; binning f x f pixels gathers f^2 times the photons per network pixel and
widens its reach f-fold, as camera binning does, and stays linear. To keep the full
pixel grid without interpolation, every one of the f^2 phase-shifted binned images is
restored and each output pixel is the mean of the restored values of the f^2 blocks
that contain it ("cycle spinning"). The result does not depend on where a band or block
starts (each block is restored on the same grid of blocks), so bands and dask blocks
stay exact with a halo of :func:`halo` pixels. When it is used is the linear intensity
model's decision (:data:`msrnet_napari.linear_intensity.BINNING_SNR`).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import numpy as np

MAX_FACTOR = 4

RunFn = Callable[[np.ndarray, Optional[Callable[[int, int], bool]]], np.ndarray]


def check_factor(factor) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) \
            or not 1 <= int(factor) <= MAX_FACTOR:
        raise ValueError(f"binning must be 'auto' or an integer in 1..{MAX_FACTOR}, "
                         f"got {str(factor)[:40]}")
    return int(factor)


def requested_factor(binning) -> Optional[int]:
    """The user's ``binning=``: None for "auto" (or None: the decision's rule), else the
    checked factor (:func:`check_factor`)."""
    if binning is None or (isinstance(binning, str) and binning == "auto"):
        return None
    return check_factor(binning)


def halo(factor: int, radius: int) -> int:
    """Context (pixels) a binned restoration needs around the kept output."""
    return radius if factor == 1 else factor * (radius + 1)


def box_mean(u: np.ndarray, factor: int) -> np.ndarray:
    """Mean of every f x f block of ``u`` (H x W x C), edges reflected:
    shape (H + f - 1, W + f - 1, C); entry b covers pixels b - f + 1 .. b."""
    m = factor - 1
    p = np.pad(u, ((m, m), (m, m), (0, 0)), mode="reflect" if min(u.shape[:2]) > m else "edge")
    h, w = p.shape[0] - m, p.shape[1] - m
    box = np.zeros((h, w, u.shape[2]), np.float32)
    for dy in range(factor):
        for dx in range(factor):
            box += p[dy:dy + h, dx:dx + w]
    box *= np.float32(1.0 / (factor * factor))
    return box


def fill_ceiling(u: np.ndarray, ceiling: float) -> np.ndarray:
    """``u`` with the pixels at or above ``ceiling`` (hot pixels, star cores: the linear
    model passes them through unchanged) replaced by the median of their other 3 x 3
    neighbours, so that binning does not smear them over their neighbours' blocks."""
    hot = np.nonzero(u[..., 0] >= ceiling)
    if hot[0].size == 0:
        return u
    p = np.pad(u[..., 0], 1, mode="edge").astype(np.float32)
    p[p >= ceiling] = np.nan
    ys, xs = hot
    neigh = np.stack([p[ys + dy, xs + dx] for dy in range(3) for dx in range(3)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: keep the ceiling
        fill = np.nanmedian(neigh, axis=1)
    fill = np.where(np.isnan(fill), ceiling, fill).astype(np.float32)
    out = u.copy()
    out[ys, xs, :] = fill[:, None]
    return out


def run_binned(run: RunFn, u: np.ndarray, factor: int,
               progress: Optional[Callable[[int, int], bool]] = None,
               ceiling: Optional[float] = None) -> np.ndarray:
    """``run`` (the engine on one H x W x 3 network image) applied cycle-spun binned by
    ``factor``; factor 1 is ``run(u)`` itself. ``progress(done, total)`` sees the f^2
    calls as one job. Pixels at ``ceiling`` (passed through by the caller) are left
    out of the bins (:func:`fill_ceiling`)."""
    if factor == 1:
        return run(u, progress)
    height, width = u.shape[:2]
    box = box_mean(u if ceiling is None else fill_ceiling(u, ceiling), factor)
    value = np.empty(box.shape, np.float32)
    calls = factor * factor
    for k in range(calls):
        py, px = divmod(k, factor)
        cb = None
        if progress is not None:
            def cb(done: int, total: int, k=k) -> bool:
                return progress(k * total + done, calls * total)
        value[py::factor, px::factor] = run(np.ascontiguousarray(box[py::factor, px::factor]), cb)
    out = np.zeros((height, width, u.shape[2]), np.float32)
    for dy in range(factor):
        for dx in range(factor):
            out += value[dy:dy + height, dx:dx + width]
    out *= np.float32(1.0 / calls)
    return out
