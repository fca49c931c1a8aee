"""Image quality metrics (numpy/scikit-image, no torch): PSNR and SSIM.

Both take two images of the same shape, ``HxW`` or ``HxWxC`` (channel last),
uint8 or float in [0, 1] (uint8 is scaled by 1/255; floats are clipped to
[0, 1]), and compare them with ``data_range=1``.
"""

from __future__ import annotations

import numpy as np

from .degrade import to_float

__all__ = ["psnr", "ssim"]


def _unit(a) -> np.ndarray:
    return to_float(a).astype(np.float64)


def _pair(reference, test) -> tuple[np.ndarray, np.ndarray]:
    ref, out = _unit(reference), _unit(test)
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: {ref.shape} vs {out.shape}")
    return ref, out


def psnr(reference, test) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    ref, out = _pair(reference, test)
    mse = float(np.mean((ref - out) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def ssim(reference, test) -> float:
    """Mean structural similarity (skimage defaults, 7x7 window, per channel)."""
    from skimage.metrics import structural_similarity

    ref, out = _pair(reference, test)
    channel_axis = -1 if ref.ndim == 3 else None
    return float(structural_similarity(ref, out, data_range=1.0, channel_axis=channel_axis))


# --------------------------------------------------------------------------- v2 metrics
# GT-mean PSNR and artefact metrics (benchmarks/eval_quality.py). Images are HxWx3 in
# [0, 1]; artefact measures are in 8-bit codes (x 255) of the display values.

__all__ += ["gt_mean_psnr", "gt_mean_scale", "luma", "flat_mask", "edge_band",
            "chroma_noise", "blotchiness", "halo", "hue_shift", "hf_noise", "artefacts"]

FLAT_PATCH = 32  # side of the patches of the smooth-sky / flat-wall crop set
FLAT_GRADIENT = 0.012  # 95th percentile of the reference's gradient in a flat patch
LOW_SIGMA = 4.0  # Gaussian sigma of "low frequency" (blotches, chroma noise)
EDGE_GRADIENT = 0.08  # a strong edge of the reference (gradient of the blurred luma)
EDGE_BAND = (2, 6)  # the band beside a strong edge, distance in pixels
SATURATED = 0.35  # saturation (max - min) / max of a saturated reference pixel


def gt_mean_scale(reference, test) -> np.ndarray:
    """``test`` scaled so that its mean equals the reference's (per image), clipped."""
    ref, out = _pair(reference, test)
    m = float(out.mean())
    return np.clip(out * (float(ref.mean()) / m if m > 0 else 1.0), 0.0, 1.0)


def gt_mean_psnr(reference, test) -> float:
    """PSNR after :func:`gt_mean_scale`: the error that is left once the overall brightness
    is right (the usual 'GT-mean' protocol of paired low-light benchmarks)."""
    return psnr(reference, gt_mean_scale(reference, test))


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sig = (sigma, sigma) + (0,) * (a.ndim - 2)
    return gaussian_filter(a, sig, mode="reflect")


def luma(img: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of display values."""
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _gradient(y: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    from scipy.ndimage import sobel

    b = _blur(y, sigma)
    return np.hypot(sobel(b, 0), sobel(b, 1)) / 8.0  # per pixel (sobel's kernel sums to 8)


def flat_mask(reference, patch: int = FLAT_PATCH, max_gradient: float = FLAT_GRADIENT
              ) -> np.ndarray:
    """Bool HxW mask of the smooth patches of the reference (sky, walls): the patches
    of a ``patch`` grid whose 95th-percentile gradient is below ``max_gradient`` and whose
    luma is neither black nor clipped (mean in [0.03, 0.97])."""
    ref = _unit(reference)
    y = luma(ref)
    g = _gradient(y)
    mask = np.zeros(y.shape, bool)
    for r in range(0, y.shape[0] - patch + 1, patch):
        for c in range(0, y.shape[1] - patch + 1, patch):
            gp, yp = g[r:r + patch, c:c + patch], y[r:r + patch, c:c + patch]
            if np.percentile(gp, 95) < max_gradient and 0.03 <= yp.mean() <= 0.97:
                mask[r:r + patch, c:c + patch] = True
    return mask


def _patch_std(err: np.ndarray, mask: np.ndarray, patch: int = FLAT_PATCH) -> float:
    """Mean over the flat patches of the std of ``err`` in each (patch offsets removed)."""
    vals = []
    for r in range(0, mask.shape[0] - patch + 1, patch):
        for c in range(0, mask.shape[1] - patch + 1, patch):
            if mask[r, c]:
                vals.append(float(err[r:r + patch, c:c + patch].std()))
    return float(np.mean(vals)) if vals else float("nan")


def _chroma(img: np.ndarray) -> np.ndarray:
    y = luma(img)
    return np.stack([img[..., 2] - y, img[..., 0] - y], -1)  # B - Y, R - Y


def chroma_noise(reference, test, mask=None) -> float:
    """(a) Low-frequency chroma noise: per flat patch, the std of the Gaussian-blurred
    (sigma LOW_SIGMA) chroma of the output minus the reference's; codes."""
    ref, out = _pair(reference, test)
    mask = flat_mask(ref) if mask is None else mask
    d = _blur(_chroma(out), LOW_SIGMA) - _blur(_chroma(ref), LOW_SIGMA)
    return 255.0 * float(np.mean([_patch_std(d[..., k], mask) for k in range(2)]))


def blotchiness(reference, test, mask=None) -> float:
    """(b) Blotches: per flat patch, the std of the low-frequency luma error; codes."""
    ref, out = _pair(reference, test)
    mask = flat_mask(ref) if mask is None else mask
    d = _blur(luma(out), LOW_SIGMA) - _blur(luma(ref), LOW_SIGMA)
    return 255.0 * _patch_std(d, mask)


def edge_band(reference, band: tuple[int, int] = EDGE_BAND,
              min_gradient: float = EDGE_GRADIENT) -> np.ndarray:
    """Bool HxW mask: pixels ``band`` pixels (Chebyshev distance) beside a strong edge."""
    from scipy.ndimage import distance_transform_cdt

    edges = _gradient(luma(_unit(reference))) > min_gradient
    if not edges.any():
        return np.zeros(edges.shape, bool)
    dist = distance_transform_cdt(~edges, metric="chessboard")
    return (dist >= band[0]) & (dist <= band[1])


def halo(reference, test, band=None) -> float:
    """(c) Halo: mean over the band beside strong reference edges of how far the output's
    luma (GT-mean scaled, lightly blurred against noise) leaves the range of the
    reference's luma within the band's reach (overshoot above the local max plus
    undershoot below the local min); codes."""
    from scipy.ndimage import maximum_filter, minimum_filter

    ref, out = _pair(reference, test)
    band = edge_band(ref) if band is None else band
    if not band.any():
        return float("nan")
    yr, yo = luma(ref), _blur(luma(gt_mean_scale(ref, out)), 1.0)
    size = 2 * EDGE_BAND[1] + 1
    hi, lo = maximum_filter(yr, size), minimum_filter(yr, size)
    over = np.maximum(yo - hi, 0) + np.maximum(lo - yo, 0)
    return 255.0 * float(over[band].mean())


def _hue(img: np.ndarray) -> np.ndarray:
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)


def hue_shift(reference, test) -> float:
    """(d) Mean absolute hue difference (degrees) on the reference's saturated pixels
    (saturation (max-min)/max >= SATURATED, value >= 0.15), both lightly blurred."""
    ref, out = _pair(reference, test)
    rb, ob = _blur(ref, 1.0), _blur(out, 1.0)
    mx, mn = rb.max(-1), rb.min(-1)
    sat = (mx >= 0.15) & ((mx - mn) >= SATURATED * np.maximum(mx, 1e-6))
    if not sat.any():
        return float("nan")
    d = np.angle(np.exp(1j * (_hue(ob) - _hue(rb))))
    return float(np.degrees(np.abs(d[sat])).mean())


def hf_noise(reference, test, mask=None) -> float:
    """High-frequency noise left in flat regions: std of (output - reference) minus its
    Gaussian blur (sigma 2), per flat patch; codes. With ``reference`` the input itself,
    the noise of the input."""
    ref, out = _pair(reference, test)
    mask = flat_mask(ref) if mask is None else mask
    e = luma(out) - luma(ref)
    return 255.0 * _patch_std(e - _blur(e, 2.0), mask)


def artefacts(reference, test, dark=None, gain: float | None = None) -> dict[str, float]:
    """All artefact measures of one output (the crop set and edge band from the reference);
    with the ``dark`` input also its noise amplification (output HF noise / input HF noise
    in the flat regions, both against the reference re-exposed by ``gain``)."""
    ref, out = _pair(reference, test)
    mask, band = flat_mask(ref), edge_band(ref)
    res = {"flat_fraction": float(mask.mean()), "chroma_noise": chroma_noise(ref, out, mask),
           "blotch": blotchiness(ref, out, mask), "halo": halo(ref, out, band),
           "hue_shift": hue_shift(ref, out), "hf_noise": hf_noise(ref, out, mask)}
    if dark is not None:
        d = _unit(dark)
        e_in = luma(d) - _blur(luma(d), 2.0)
        n_in = 255.0 * _patch_std(e_in, mask)
        e_out = luma(out) - _blur(luma(out), 2.0)
        n_out = 255.0 * _patch_std(e_out, mask)
        res["noise_in"] = n_in
        res["noise_amplification"] = n_out / n_in if n_in > 0 else float("nan")
    if gain is not None:
        res["gain"] = float(gain)
    return res
