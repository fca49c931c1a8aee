"""Classical low-light enhancers, the baselines MSR-net is evaluated against.

All take an ``HxWx3`` (or ``HxW``) image, uint8 or float in [0, 1], and return
float32 in [0, 1] of the same shape. numpy + scipy/scikit-image only (no torch).

* :func:`identity` - the dark input itself.
* :func:`gamma` - fixed gamma (default 1/2.2) or, with ``gamma=None``, the
  adaptive gamma that maps the mean luminance to 0.5.
* :func:`hist_eq` - global histogram equalisation of the HSV value channel
  (hue and saturation kept).
* :func:`clahe` - contrast-limited adaptive histogram equalisation
  (``skimage.exposure.equalize_adapthist``; colour images are processed on
  their HSV value channel by scikit-image).
* :func:`msrcr` - multi-scale Retinex with colour restoration (Jobson, Rahman
  & Woodell 1997): sigmas 15/80/250, equal weights, alpha=125, beta=46,
  G=192, b=-30, followed by a simplest colour balance (1 % clipping).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .degrade import to_float

__all__ = ["identity", "gamma", "gamma_adaptive", "hist_eq", "clahe", "msrcr", "BASELINES"]

_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def _unit(image) -> np.ndarray:
    return np.nan_to_num(to_float(image), nan=0.0)


def identity(image) -> np.ndarray:
    return _unit(image).copy()


def _luminance(x: np.ndarray) -> np.ndarray:
    return x @ _LUMA if x.ndim == 3 and x.shape[-1] == 3 else (x.mean(-1) if x.ndim == 3 else x)


def gamma(image, gamma: float | None = 1 / 2.2) -> np.ndarray:
    """``x ** gamma``; ``gamma=None`` picks ``log(0.5)/log(mean luminance)``."""
    x = _unit(image)
    if gamma is None:
        m = float(np.clip(_luminance(x).mean(), 1e-4, 1 - 1e-4))
        gamma = float(np.clip(np.log(0.5) / np.log(m), 0.05, 20.0))
    return np.power(x, np.float32(gamma)).astype(np.float32)


def gamma_adaptive(image) -> np.ndarray:
    return gamma(image, None)


def _on_value(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``fn`` to the HSV value channel (max of RGB), keeping hue/saturation."""
    if x.ndim == 2:
        return np.clip(fn(x), 0, 1).astype(np.float32)
    v = x.max(axis=-1)
    v_new = np.clip(fn(v), 0, 1).astype(np.float32)
    # scaling RGB by v_new / v keeps hue and saturation of the HSV model exactly
    ratio = np.where(v > 1e-6, v_new / np.maximum(v, 1e-6), 0.0)[..., None]
    out = x * ratio
    out = np.where((v <= 1e-6)[..., None], v_new[..., None], out)  # black pixels -> gray
    return np.clip(out, 0, 1).astype(np.float32)


def hist_eq(image, nbins: int = 256) -> np.ndarray:
    from skimage import exposure

    x = _unit(image)

    def eq(v: np.ndarray) -> np.ndarray:
        if float(v.max() - v.min()) < 1e-6:
            return v
        return exposure.equalize_hist(v, nbins=nbins)

    return _on_value(x, eq)


def clahe(image, clip_limit: float = 0.01, kernel_size=None) -> np.ndarray:
    from skimage import exposure

    x = _unit(image)
    out = exposure.equalize_adapthist(x, kernel_size=kernel_size, clip_limit=clip_limit)
    return np.clip(np.nan_to_num(out), 0, 1).astype(np.float32)


def _gaussian(channel: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; large sigmas are done on a downsampled image (same result
    up to interpolation error, orders of magnitude faster)."""
    from scipy import ndimage

    factor = int(max(1, sigma // 8))
    h, w = channel.shape
    if factor == 1 or min(h, w) < 4 * factor:
        return ndimage.gaussian_filter(channel, sigma, mode="reflect", truncate=3.0)
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.pad(channel, ((0, hp - h), (0, wp - w)), mode="edge")
    small = padded.reshape(hp // factor, factor, wp // factor, factor).mean(axis=(1, 3))
    # box-averaging adds variance factor^2/12 per axis; remove it from the blur
    s = np.sqrt(max(sigma**2 - factor**2 / 12.0, 1e-6)) / factor
    small = ndimage.gaussian_filter(small, s, mode="reflect", truncate=3.0)
    zoom = (hp / small.shape[0], wp / small.shape[1])
    big = ndimage.zoom(small, zoom, order=1, mode="nearest", grid_mode=True)
    return big[:h, :w]


def _simplest_color_balance(x: np.ndarray, low: float, high: float) -> np.ndarray:
    out = np.empty_like(x, dtype=np.float32)
    for c in range(x.shape[-1]):
        ch = x[..., c]
        lo, hi = np.percentile(ch, [low, 100 - high])
        if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-6:
            out[..., c] = np.nan  # marked: flat channel, handled by the caller
        else:
            out[..., c] = np.clip((ch - lo) / (hi - lo), 0, 1)
    return out


def msrcr(image, sigmas=(15.0, 80.0, 250.0), alpha: float = 125.0, beta: float = 46.0,
          gain: float = 192.0, offset: float = -30.0, clip: float = 1.0) -> np.ndarray:
    """Multi-scale Retinex with colour restoration + simplest colour balance."""
    x = _unit(image)
    gray = x.ndim == 2
    if gray:
        x = x[..., None]
    img = x.astype(np.float64) * 255.0 + 1.0  # Jobson et al. work on 0..255 (+1 for the log)
    log_img = np.log(img)
    retinex = np.zeros_like(img)
    for c in range(img.shape[-1]):
        for s in sigmas:
            retinex[..., c] += log_img[..., c] - np.log(_gaussian(img[..., c], s))
    retinex /= len(sigmas)
    if img.shape[-1] > 1:
        restoration = beta * (np.log(alpha * img) - np.log(img.sum(axis=-1, keepdims=True)))
        msr = gain * (retinex * restoration + offset)
    else:
        msr = retinex
    out = _simplest_color_balance(msr, clip, clip)
    flat = np.isnan(out)
    if flat.any():  # a flat channel carries no structure: keep the input there
        out = np.where(flat, x, out)
    out = out[..., 0] if gray else out
    return np.clip(out, 0, 1).astype(np.float32)


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": identity,
    "gamma 1/2.2": gamma,
    "gamma adaptive": gamma_adaptive,
    "hist-eq": hist_eq,
    "CLAHE": clahe,
    "MSRCR": msrcr,
}
