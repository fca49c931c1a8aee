"""Synthetic low-light degradation for training and evaluating MSR-net.

Two families of darkening are mixed during training:

* ``gamma`` - the paper's simple model (Shen et al. 2017, sec. 4.1: random gamma
  and brightness scaling): ``dark = c * x ** g`` with ``g ~ U(2, 3.5)`` and
  ``c ~ U(0.3, 1)``, quantised to 8 bits.
* ``sensor`` - a camera-like model: linearise (inverse sRGB), scale the
  exposure by ``k ~ logU(0.02, 0.3)``, add Poisson-Gaussian noise in the linear
  domain (Gaussian approximation, variance ``a * x + b**2`` with shot gain
  ``a ~ logU(5e-5, 1e-3)`` and read noise ``b ~ logU(1e-4, 1e-3)``), re-apply the
  sRGB curve and quantise to 8 bits.

The sRGB curves are those of :mod:`msrnet_napari.exposure` (re-exported here,
never redefined). Every function works on numpy arrays (channel-last, ``HxWx3`` or ``NxHxWx3``)
and - for the GPU training loop - on torch tensors (``NCHW``); this module only
imports torch lazily when given tensors, so it is usable without torch.
Randomness always comes from an explicit ``numpy.random.Generator`` /
``torch.Generator`` so results are reproducible.

:func:`darken` produces the fixed, deterministic evaluation levels 1..4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..exposure import _is_torch, linear_to_srgb, srgb_to_linear

__all__ = [
    "LowLightParams", "DARKEN_LEVELS", "srgb_to_linear", "linear_to_srgb",
    "quantize", "synthesize", "synthesize_torch", "darken", "to_float", "NEAR_BLACK_LEVEL",
    "EXTRA_LEVELS",
]


@dataclass(frozen=True)
class LowLightParams:
    """Ranges of the random low-light model (see module docstring)."""

    p_sensor: float = 0.5  # probability of the sensor model (else the gamma model)
    exposure: tuple[float, float] = (0.02, 0.3)  # log-uniform, linear light
    shot: tuple[float, float] = (5e-5, 1e-3)  # log-uniform, variance per unit signal
    read: tuple[float, float] = (1e-4, 1e-3)  # log-uniform, std
    gamma: tuple[float, float] = (2.0, 3.5)  # uniform, paper model
    scale: tuple[float, float] = (0.3, 1.0)  # uniform, paper model
    bits: int = 8  # quantisation of the dark image (0 = none)


# Evaluation levels: (exposure, shot gain, read noise), sensor model, fixed noise seed.
DARKEN_LEVELS: dict[int, tuple[float, float, float]] = {
    1: (0.30, 2e-4, 3e-4),   # mild
    2: (0.12, 2e-4, 3e-4),   # moderate
    3: (0.05, 2e-4, 3e-4),   # dark
    4: (0.02, 2e-4, 3e-4),   # very dark
}


#: A near-black evaluation level (not one of the validation levels 1-4): an 8-bit photo at
#: exposure 0.004 has a mean of a few codes - the case where the exposure gain must be
#: bounded by what the data supports (benchmarks/eval_quality.py's near-black rows).
NEAR_BLACK_LEVEL = 5
EXTRA_LEVELS: dict[int, tuple[float, float, float]] = {NEAR_BLACK_LEVEL: (0.004, 2e-4, 3e-4)}


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8/uint16/bool/float -> float32 in [0, 1] (floats are only clipped).

    This is the **training data convention** (photos for training, evaluation and
    the metrics: uint16 is always divided by 65535), not the enhancement scaling:
    :func:`msrnet_napari.enhance` maps integers by their detected or given bit
    depth (a 12-bit image stored as uint16 is divided by 4095) through
    :mod:`msrnet_napari.normalize` / :mod:`msrnet_napari.intensity`.
    """
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == bool:
        return a.astype(np.float32)
    return np.clip(a.astype(np.float32, copy=False), 0.0, 1.0)


def quantize(x, bits: int = 8):
    """Round to ``2**bits`` levels in [0, 1] (numpy or torch); bits=0 only clips."""
    if _is_torch(x):
        x = x.clamp(0, 1)
    else:
        x = np.clip(x, 0, 1)
    if not bits:
        return x
    q = float(2**bits - 1)
    return (x * q).round() / q


def _sensor(x_srgb, exposure, shot, read, noise, bits):
    """Shared sensor model; params broadcast against x, noise ~ N(0,1) like x."""
    lin = srgb_to_linear(x_srgb) * exposure
    if noise is not None:
        if _is_torch(lin):
            lin = lin + (shot * lin.clamp_min(0) + read * read).sqrt() * noise
        else:
            lin = lin + np.sqrt(shot * np.maximum(lin, 0) + read * read) * noise
    return quantize(linear_to_srgb(lin), bits)


def _gamma_model(x, gamma, scale, bits):
    if _is_torch(x):
        return quantize(scale * x.clamp(0, 1) ** gamma, bits)
    return quantize(scale * np.clip(x, 0, 1) ** gamma, bits)


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def synthesize(image: np.ndarray, rng: np.random.Generator | int | None = None,
               params: LowLightParams = LowLightParams(), mode: str = "mixed") -> np.ndarray:
    """Random low-light version of ``image`` (numpy, ``HxWx3`` or ``NxHxWx3``).

    ``image`` may be uint8 or float in [0, 1]; returns float32 in [0, 1].
    ``mode``: "mixed" (sensor with probability ``params.p_sensor``), "sensor"
    or "gamma". Each image of a batch gets its own parameters.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    x = to_float(image)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected HxWxC or NxHxWxC, got shape {x.shape}")
    n = x.shape[0]
    bshape = (n, 1, 1, 1)
    if mode == "mixed":
        use_sensor = rng.random(n) < params.p_sensor
    elif mode in ("sensor", "gamma"):
        use_sensor = np.full(n, mode == "sensor")
    else:
        raise ValueError(f"unknown mode {mode!r}")
    exposure = _loguniform(rng, *params.exposure, n).reshape(bshape)
    shot = _loguniform(rng, *params.shot, n).reshape(bshape)
    read = _loguniform(rng, *params.read, n).reshape(bshape)
    gamma = rng.uniform(*params.gamma, n).reshape(bshape)
    scale = rng.uniform(*params.scale, n).reshape(bshape)
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    sensor = _sensor(x, exposure.astype(np.float32), shot.astype(np.float32),
                     read.astype(np.float32), noise, params.bits)
    simple = _gamma_model(x, gamma.astype(np.float32), scale.astype(np.float32), params.bits)
    out = np.where(use_sensor.reshape(bshape), sensor, simple).astype(np.float32)
    return out[0] if single else out


def synthesize_torch(batch, generator=None, params: LowLightParams = LowLightParams(),
                     mode: str = "mixed"):
    """Torch version of :func:`synthesize` for ``NCHW`` float batches in [0, 1].

    Runs wherever ``batch`` lives (GPU for training); ``generator`` must be a
    ``torch.Generator`` on the same device (or None for the global RNG).
    """
    import torch

    n = batch.shape[0]
    dev = batch.device
    kw = {"generator": generator, "device": dev}

    def uni(lo, hi):
        return torch.rand((n, 1, 1, 1), **kw) * (hi - lo) + lo

    def logu(lo, hi):
        return torch.exp(uni(math.log(lo), math.log(hi)))

    if mode == "mixed":
        use_sensor = torch.rand((n, 1, 1, 1), **kw) < params.p_sensor
    elif mode in ("sensor", "gamma"):
        use_sensor = torch.full((n, 1, 1, 1), mode == "sensor", dtype=torch.bool, device=dev)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    exposure, shot, read = logu(*params.exposure), logu(*params.shot), logu(*params.read)
    gamma, scale = uni(*params.gamma), uni(*params.scale)
    noise = torch.randn(batch.shape, **kw)
    x = batch.float()
    sensor = _sensor(x, exposure, shot, read, noise, params.bits)
    simple = _gamma_model(x, gamma, scale, params.bits)
    return torch.where(use_sensor, sensor, simple)


def darken(image: np.ndarray, level: int, *, noise: bool = True) -> np.ndarray:
    """Deterministic evaluation darkening at ``level`` 1 (mild) .. 4 (very dark), or 5
    (:data:`NEAR_BLACK_LEVEL`, for the near-black artefact measurements only).

    Sensor model with fixed exposure/noise (:data:`DARKEN_LEVELS`) and a noise
    field from a fixed seed, so the same image always gives the same result.
    Returns the input's dtype: uint8 in -> uint8 out, otherwise float32 in [0, 1].
    """
    levels = {**DARKEN_LEVELS, **EXTRA_LEVELS}
    if level not in levels:
        raise ValueError(f"level must be one of {sorted(levels)}, got {level!r}")
    exposure, shot, read = levels[level]
    is_u8 = np.asarray(image).dtype == np.uint8
    x = to_float(image)
    z = None
    if noise:
        z = np.random.default_rng(1_000_003 * level + 17).standard_normal(x.shape,
                                                                          dtype=np.float32)
    out = _sensor(x, np.float32(exposure), np.float32(shot), np.float32(read), z, 8)
    out = out.astype(np.float32)
    if is_u8:
        return np.rint(out * 255).astype(np.uint8)
    return out
