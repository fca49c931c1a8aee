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
