"""Training and validation pairs for the microscopy model (linear sensor data).

Serves **scientific imagery**. Two kinds of pairs, both in the network space of
:mod:`msrnet_napari.linear_intensity` (the same functions as at inference):

* **synthetic short exposures** of clean images (W2S 400-frame averages, DSB2018
  nuclei, gray photos as extra texture), from a physical sensor model::

      electrons ~ Poisson(peak * clean + background)     peak ~ logU(2, 3000) photons
      counts    = rint(offset + gain_adu * (electrons + N(0, read^2)))   clipped to 12/16 bit

  plus, sometimes, sparse bright point sources (up to 6x the image's peak) and hot
  pixels. The target is the expected value ``offset + gain_adu * (peak*clean + bg)``.
* **real pairs**: W2S single raw frames (``avg1``) and the 400-frame average
  (``avg400``) of the same field, affinely fitted to the frame (each was scaled to
  8 bits on its own).

The mapping of every sample is decided from its *whole* noisy source image (a
random context sample of it), as :func:`msrnet_napari.enhance` decides it from
the whole array - never from the crop alone.

Split: whole W2S fields and whole DSB images are held out (:func:`split_names`).
numpy only (no torch).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from ..intensity import noise_plane
from ..linear_intensity import (
    PEDESTAL,
    SPAN,
    UPPER_CLIP,
    ChannelMapping,
    background_noise,
    decide_channel,
    signal_noise,
    strided_sample,
)

#: W2S fields held out for validation (whole fields, all three channels)
W2S_VAL_FIELDS = frozenset({3, 9, 15, 21, 27, 33, 39, 45, 51, 57})
DSB_VAL_FRACTION = 0.15
#: side of the region the noise at the bright structures is measured on (enhance() uses
#: a central crop of up to 1024 x 1024 of the middle plane; a training image's context)
NOISE_PLANE = 256
PHOTON_LEVELS = (3.0, 10.0, 30.0, 100.0, 1000.0)  # fixed validation levels (photons at peak)


def _read_gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32).mean(axis=-1)
    return a.astype(np.float32)


def _held_out(name: str, fraction: float) -> bool:
    h = int(hashlib.sha256(("msrnet-micro-split:" + name).encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def w2s_field(name: str) -> int:
    return int(name.split("_")[0])


@dataclass
class RealPair:
    name: str
    noisy: np.ndarray  # float32, the raw frame's values
    target: np.ndarray  # float32, the average fitted to the frame's units
    mapping: ChannelMapping  # decided from the whole noisy frame


@dataclass
class MicroscopyData:
    train_clean: list[np.ndarray] = field(default_factory=list)  # float32 [0, 1]
    val_clean: list[np.ndarray] = field(default_factory=list)
    train_real: list[RealPair] = field(default_factory=list)
    val_real: list[RealPair] = field(default_factory=list)
    names: dict[str, list[str]] = field(default_factory=dict)


def fit_affine(reference: np.ndarray, frame: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising ||a * reference + b - frame||^2."""
    r = reference.ravel().astype(np.float64)
    f = frame.ravel().astype(np.float64)
    A = np.stack([r, np.ones_like(r)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, f, rcond=None)
    return float(a), float(b)


def real_pair(name: str, noisy: np.ndarray, clean: np.ndarray) -> RealPair:
    a, b = fit_affine(clean, noisy)
    mapping = decide_channel(strided_sample(noisy, (0, 1)), integer=True,
                             plane=noise_plane(noisy, NOISE_PLANE))
    return RealPair(name, noisy, (a * clean + b).astype(np.float32), mapping)


def load(root: str | Path, photos: Optional[str | Path] = None, max_photos: int = 80
         ) -> MicroscopyData:
    """Load the clean images and the W2S pairs of ``root`` (``../shared/data``)."""
    root = Path(root)
    data = MicroscopyData(names={"train": [], "val": []})
    w2s = root / "microscopy" / "w2s"
    for p in sorted((w2s / "avg400").glob("*.png")):
        val = w2s_field(p.stem) in W2S_VAL_FIELDS
        clean = _read_gray(p)
        noisy = _read_gray(w2s / "avg1" / p.name)
        pair = real_pair(f"w2s/{p.stem}", noisy, clean)
        (data.val_real if val else data.train_real).append(pair)
        (data.val_clean if val else data.train_clean).append(clean / 255.0)
        data.names["val" if val else "train"].append(f"w2s/{p.stem}")
    for p in sorted((root / "microscopy" / "dsb2018").glob("*.png")):
        val = _held_out(p.stem, DSB_VAL_FRACTION)
        img = _read_gray(p)
        if min(img.shape) < 64:
            continue
        (data.val_clean if val else data.train_clean).append(img / 255.0)
        data.names["val" if val else "train"].append(f"dsb2018/{p.stem}")
    if photos is not None:  # extra texture, training only
        paths = sorted(Path(photos).glob("**/*.jpg"))[:max_photos]
        for p in paths:
            img = _read_gray(p) / 255.0
            data.train_clean.append(img ** 2.2)  # roughly linear light
            data.names["train"].append(f"photos/{p.name}")
    return data


@dataclass(frozen=True)
class SensorParams:
    peak_photons: tuple[float, float] = (2.0, 3000.0)  # log-uniform
    p_low: float = 0.0  # share of exposures drawn from low_photons instead
    low_photons: tuple[float, float] = (2.0, 30.0)  # log-uniform
    background: tuple[float, float] = (0.0, 0.05)  # uniform, fraction of peak
    adu_per_electron: tuple[float, float] = (0.3, 5.0)  # log-uniform
    read_electrons: tuple[float, float] = (0.5, 6.0)  # uniform
    offset: tuple[float, float] = (0.0, 500.0)  # uniform, ADU
    p_spots: float = 0.3
    p_hot: float = 0.2
    context: int = 16384
    #: share of exposures whose whole image has another dynamic range than the crop's own
    #: (:func:`_other_range`): the linear model's scale is then set by a much brighter
    #: object elsewhere (high dynamic range: faint structures with tiny noise in network
    #: units) or by a dimmer image (the crop's structures far above the reference level)
    p_range: float = 0.0
    bright_share: float = 2.0 / 3.0  # of those: a brighter object elsewhere (else: dimmer)
    bright_context: tuple[float, float] = (3.0, 100.0)  # log-uniform, x the image maximum
    dim_context: tuple[float, float] = (1.0 / 6.0, 1.0 / 1.5)  # log-uniform, x the image


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def expose(clean: np.ndarray, rng: np.random.Generator, *, peak: float, bg: float, adu: float,
           read: float, offset: float, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy counts, expected counts) of a clean [0, 1+] image under the sensor model."""
    electrons = peak * clean + bg
    expected = offset + adu * electrons
    counts = rng.poisson(np.maximum(electrons, 0)).astype(np.float64)
    counts += rng.normal(0.0, read, size=counts.shape)
    noisy = np.clip(np.rint(offset + adu * counts), 0, 2**bits - 1)
    return noisy, expected


def _spots(shape, rng: np.random.Generator) -> np.ndarray:
    """Sparse Gaussian point sources with amplitudes up to 6 (clean units)."""
    h, w = shape
    out = np.zeros(shape, np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(1, 6))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(0.7, 3.0)
        out += _logu(rng, 0.5, 6.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out


def _other_range(ctx: np.ndarray, rng: np.random.Generator, params: SensorParams) -> np.ndarray:
    """The whole image (its context sample) with another dynamic range than the crop:
    ``bright_share`` of the times (two in three) a bright object on 1 % of it,
    ``bright_context`` times the image's maximum (it sets the 99.9th percentile, so the
    crop's structures are faint beside it, and the exposure is shortened to keep it below
    full scale); else the rest of the image ``dim_context`` times dimmer (the crop holds
    the brightest structures, up to ~6x the reference level)."""
    ctx = ctx.copy()
    if rng.random() < params.bright_share:
        n = max(32, ctx.size // 100)
        ctx[:n] = _logu(rng, *params.bright_context) * max(float(ctx.max()), 1e-3)
    else:
        ctx *= _logu(rng, *params.dim_context)
    return ctx


def synthetic_pair(clean_image: np.ndarray, crop: int, rng: np.random.Generator,
                   params: SensorParams = SensorParams(), peak: Optional[float] = None,
                   center: bool = False, condition: bool = False):
    """(network input, network target) for a crop of a clean image, float32 crop x crop;
    with ``condition`` also the noise level a ``noise_input`` network is given
    (:meth:`ChannelMapping.noise_condition`), estimated as enhance() does, on a
    NOISE_PLANE x NOISE_PLANE region around the crop exposed alike (its own random
    stream, so the pair is the one drawn without ``condition``)."""
    h, w = clean_image.shape
    cs = min(crop, h, w)
    if center:
        y0, x0 = (h - cs) // 2, (w - cs) // 2
    else:
        y0, x0 = int(rng.integers(0, h - cs + 1)), int(rng.integers(0, w - cs + 1))
    c = clean_image[y0:y0 + cs, x0:x0 + cs].astype(np.float64)
    ctx_idx = rng.integers(0, h * w, size=params.context)
    ctx = clean_image.ravel()[ctx_idx].astype(np.float64)
    if not center and rng.random() < params.p_spots:
        c = c + _spots(c.shape, rng)
    if not center and params.p_range > 0 and rng.random() < params.p_range:
        ctx = _other_range(ctx, rng, params)
    if peak is None:
        low = params.p_low > 0 and rng.random() < params.p_low
        peak = _logu(rng, *(params.low_photons if low else params.peak_photons))
    kw = dict(peak=peak, bg=peak * rng.uniform(*params.background),
              adu=_logu(rng, *params.adu_per_electron), read=rng.uniform(*params.read_electrons),
              offset=rng.uniform(*params.offset), bits=int(rng.choice([12, 16])))
    # a low-light exposure: the brightest clean pixel stays below 90 % of the full scale
    top = kw["offset"] + kw["adu"] * (peak * max(float(c.max()), float(ctx.max()), 1.0) + kw["bg"])
    if top > 0.9 * (2**kw["bits"] - 1):
        kw["adu"] *= (0.9 * (2**kw["bits"] - 1) - kw["offset"]) / (top - kw["offset"])
    noisy, expected = expose(c, rng, **kw)
    ctx_noisy, _ = expose(ctx, rng, **kw)
    if not center and rng.random() < params.p_hot:
        n_hot = int(rng.integers(1, 4))
        hot = rng.integers(0, cs, size=(n_hot, 2))
        value = 2**kw["bits"] - 1
        noisy[hot[:, 0], hot[:, 1]] = value
        expected[hot[:, 0], hot[:, 1]] = value
    mapping = decide_channel(ctx_noisy, integer=True)
    x, y = mapping.to_network(noisy), to_target(expected, mapping)
    if not condition:
        return x, y
    r0, c0 = max(0, y0 + cs // 2 - NOISE_PLANE // 2), max(0, x0 + cs // 2 - NOISE_PLANE // 2)
    region = clean_image[r0:r0 + NOISE_PLANE, c0:c0 + NOISE_PLANE].astype(np.float64)
    seed = int(kw["offset"] * 1e3) * 1000003 + int(peak * 1e3) + int(kw["adu"] * 1e6)
    region_noisy, _ = expose(region, np.random.default_rng(seed), **kw)
    sn = signal_noise(region_noisy, mapping.dark, mapping.scale)
    told = replace(mapping, signal_noise=sn, background_noise=background_noise(region_noisy))
    return x, y, told.noise_condition()


def to_target(expected: np.ndarray, mapping: ChannelMapping) -> np.ndarray:
    """Expected counts -> network values, clipped at the input's ceiling (brighter pixels
    are passed through at inference, see ChannelMapping.restore)."""
    u = PEDESTAL + SPAN * (expected - mapping.dark) / mapping.scale
    return np.clip(u, -PEDESTAL, UPPER_CLIP).astype(np.float32)


def real_crop(pair: RealPair, crop: int, rng: np.random.Generator, center: bool = False,
              condition: bool = False):
    """(network input, network target) of a crop of a real pair (with ``condition``: and
    the pair's noise level, :meth:`ChannelMapping.noise_condition`)."""
    h, w = pair.noisy.shape
    cs = min(crop, h, w)
    if center:
        y0, x0 = (h - cs) // 2, (w - cs) // 2
    else:
        y0, x0 = int(rng.integers(0, h - cs + 1)), int(rng.integers(0, w - cs + 1))
    sl = (slice(y0, y0 + cs), slice(x0, x0 + cs))
    x, y = pair.mapping.to_network(pair.noisy[sl]), to_target(pair.target[sl], pair.mapping)
    return (x, y, pair.mapping.noise_condition()) if condition else (x, y)


def dihedral(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if k >= 4:
        a, b = a[:, ::-1], b[:, ::-1]
    return np.rot90(a, k % 4), np.rot90(b, k % 4)


class BatchSampler:
    """Random training batches (N x crop x crop float32 input and target; with
    ``condition``, also N x 2 noise levels, see :func:`synthetic_pair`)."""

    def __init__(self, data: MicroscopyData, crop: int, seed: int = 0, p_real: float = 0.3,
                 params: SensorParams = SensorParams(), condition: bool = False) -> None:
        self.data, self.crop, self.p_real, self.params = data, crop, p_real, params
        self.condition = condition
        self.rng = np.random.default_rng(seed)
        big = [c for c in data.train_clean if min(c.shape) >= crop]
        if not big:
            raise ValueError(f"no training image is at least {crop} pixels on each side")
        self.clean = big

    def sample(self, n: int):
        xs = np.empty((n, self.crop, self.crop), np.float32)
        ys = np.empty_like(xs)
        conds = np.zeros((n, 2), np.float32)
        for i in range(n):
            if self.data.train_real and self.rng.random() < self.p_real:
                pair = self.data.train_real[int(self.rng.integers(len(self.data.train_real)))]
                got = real_crop(pair, self.crop, self.rng, condition=self.condition)
            else:
                img = self.clean[int(self.rng.integers(len(self.clean)))]
                got = synthetic_pair(img, self.crop, self.rng, self.params,
                                     condition=self.condition)
            x, y = dihedral(got[0], got[1], int(self.rng.integers(8)))
            xs[i], ys[i] = x, y
            if self.condition:
                conds[i] = got[2]
        return (xs, ys, conds) if self.condition else (xs, ys)


def validation_set(data: MicroscopyData, size: int = 192, max_clean: int = 12,
                   condition: bool = False) -> list[tuple]:
    """Fixed [(label, input, target)]: held-out clean crops at PHOTON_LEVELS, real pairs
    (with ``condition``: (label, input, target, noise level); the same crops)."""
    out = []
    n = len(data.val_clean)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(max_clean, n))}) if n else []
    for level in PHOTON_LEVELS:
        rng = np.random.default_rng(int(level * 1000) + 7)
        for img in (data.val_clean[i] for i in picks):
            got = synthetic_pair(img, size, rng, peak=level, center=True, condition=condition)
            out.append((f"p{level:g}", *got))
    rng = np.random.default_rng(5)
    for pair in data.val_real:
        out.append(("w2s", *real_crop(pair, size, rng, center=True, condition=condition)))
    return out
