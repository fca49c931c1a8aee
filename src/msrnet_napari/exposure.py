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

Works on numpy arrays and (for the PyTorch reference model) torch tensors;
torch is never imported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import check_exposure_space

__all__ = ["srgb_to_linear", "linear_to_srgb", "exposure_statistic", "apply_exposure_gain"]

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
