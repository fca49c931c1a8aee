"""The linear intensity model: scientific (sensor-linear) data <-> network values.

Serves **scientific imagery** (fluorescence microscopy, astronomy): the data are
linear sensor counts, ``counts = dark level + signal + noise``. Nothing here
applies a tone curve. One affine map per channel, decided once for the whole
array (every plane of a stack, every dask block)::

    network value  u = PEDESTAL + SPAN * (x - dark) / scale
    restored value x = dark + gain * scale * (u - PEDESTAL) / SPAN

* ``dark``: the dark level (camera offset, or sky / background level), by
  default a robust estimate: the sigma-clipped median of a fixed subsample of
  the channel (bright objects and hot pixels are clipped away), or given.
* ``scale``: the robust signal scale, the 99.9th percentile of that subsample
  minus the dark level (a few hot pixels cannot move it), never below three
  times the background noise or one count of integer data.
* ``PEDESTAL``/``SPAN`` place the dark level at 0.25 and the reference level at
  0.65, so noise below the dark level is kept (not clipped: clipping would
  bias the background upwards; values down to dark - 0.625 scale pass), and
  objects up to ~9x the reference stay in the network's range; brighter ones
  are passed through unchanged.
* ``binning``: below a signal-to-noise ratio (scale / noise at the bright
  structures, :func:`signal_noise`) of
  :data:`BINNING_SNR` the network restores 2 x 2 binned pixels, cycle-spun back to
  the full grid (:mod:`msrnet_napari.binning`): at a few photons per pixel that
  beats the full-resolution pass (``benchmarks/calibrate_binning.py``, training data).
* ``gain`` (default 1: a *restored* image in the input's units) multiplies the
  signal above the dark level, like a longer exposure would; results are
  clipped only to the output dtype's range.

The microscopy model is trained with exactly these functions
(:func:`decide_channel` on the noisy image, see ``training/microscopy_data``),
so the network sees at inference what it saw in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import numpy as np

from .binning import requested_factor
from .normalize import cast_to

__all__ = [
    "PEDESTAL", "SPAN", "UPPER_CLIP", "half_sample_mode", "REFERENCE_PERCENTILE", "SAMPLE_PIXELS",
    "ChannelMapping", "LinearMapping", "decide_channel", "estimate_dark_level", "BINNING_SNR",
    "choose_binning", "signal_noise", "background_noise", "NOISE_CEILING", "network_input",
    "strided_sample",
]

PEDESTAL = 0.25  # network value of the dark level (room below it for noise and misestimates)
SPAN = 0.4  # network value of the reference level, above the pedestal
REFERENCE_PERCENTILE = 99.9
LOW_FRACTION = 0.3  # the background is searched among the darkest 30 % of the values
#: below this signal-to-noise ratio (scale / noise at the bright structures) a channel is restored
#: 2 x 2 binned (cycle-spun): the crossover measured on training data by
#: ``benchmarks/calibrate_binning.py``
BINNING_SNR = 10.0
SAMPLE_PIXELS = 1 << 20  # the statistics use at most about this many pixels per channel
LOWER_CLIP = 0.0  # network input floor: f1's log(1 + v x) needs x > -1/max(v)
#: network input ceiling (~9x the reference level). Brighter pixels (star cores,
#: hot pixels) enter the network at this value and are passed through unchanged
#: (only scaled by ``gain``), so they are never saturated nor smeared.
UPPER_CLIP = 4.0
#: largest noise level (network units) a noise_input network is told (noise_condition)
NOISE_CEILING = 2.0


@dataclass(frozen=True)
class ChannelMapping:
    """Affine map of one channel: stored units <-> network values."""

    dark: float
    scale: float
    noise: float = float("nan")  # robust std of the background
    dark_given: bool = False
    binning: int = 1  # f: restore f x f binned pixels, cycle-spun (msrnet_napari.binning)
    signal_noise: float = float("nan")  # noise std at the bright structures (signal_noise();
    # NaN when the plane has too few bright pixels: snr then uses the background noise)
    background_noise: float = float("nan")  # pixel noise std of the background (its Haar HH
    # detail, background_noise(): blind to dim structure, unlike ``noise``); NaN: no plane

    @property
    def snr(self) -> float:
        """scale / noise at the bright structures (about sqrt(photons) at the reference
        level for shot-noise-limited data): the ratio the binning rule reads."""
        noise = self.signal_noise if self.signal_noise > 0 else self.noise  # NaN: too few
        return self.scale / noise if noise > 0 else math.inf

    def noise_condition(self, factor: int = 1) -> tuple[float, float]:
        """The noise level a ``noise_input`` network is given, in network units, for its
        input restored ``factor`` x ``factor`` binned (box means: noise / factor): (pixel
        noise std of the background - :attr:`background_noise`, else ``noise`` -, noise
        std at the bright structures - the background's where they are too few to tell),
        each at most :data:`NOISE_CEILING`."""
        to_u = SPAN / self.scale
        noise = self.background_noise if self.background_noise >= 0 else self.noise
        background = max(noise, 0.0) * to_u if math.isfinite(noise) else 0.0
        bright = self.signal_noise * to_u if self.signal_noise > 0 else background
        return (min(background, NOISE_CEILING) / factor, min(bright, NOISE_CEILING) / factor)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dark) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"linear mapping needs a finite dark level and a positive scale, "
                             f"got dark={self.dark:.6g}, scale={self.scale:.6g}")

    def to_network(self, block: np.ndarray) -> np.ndarray:
        """Stored values -> float32 network values (float64 arithmetic for wide data)."""
        work = np.float64 if np.dtype(block.dtype).itemsize > 2 else np.float32
        u = np.asarray(block, dtype=work) - work(self.dark)
        u *= work(SPAN / self.scale)
        u += work(PEDESTAL)
        np.clip(u, LOWER_CLIP, UPPER_CLIP, out=u)
        return u.astype(np.float32, copy=False)

    def restore(self, u: np.ndarray, raw: np.ndarray, dtype: np.dtype, gain: float = 1.0
                ) -> np.ndarray:
        """Network output ``u`` -> values of ``dtype``: ``dark + gain * scale * (u - PEDESTAL)
        / SPAN`` (ints rounded and clipped to the dtype's range), except for pixels above
        the network's input range, passed through as ``dark + gain * (raw - dark)``."""
        out = np.asarray(u, dtype=np.float64) - PEDESTAL
        out *= self.scale / SPAN
        bright = np.asarray(raw, dtype=np.float64) - self.dark
        over = bright > (UPPER_CLIP - PEDESTAL) * self.scale / SPAN
        if over.any():
            out[over] = bright[over]
        out *= gain
        out += self.dark
        return cast_to(out, dtype)


@dataclass(frozen=True)
class LinearMapping:
    """The linear intensity decision for a whole array: one :class:`ChannelMapping`
    per channel (gray data: one), and the exposure ratio ``gain``."""

    channels: tuple[ChannelMapping, ...]
    gain: float = 1.0
    #: the checkpoint reads the noise level (config.noise_input): each channel's
    #: ChannelMapping.noise_condition goes into the network's input channels 1 and 2
    noise_input: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"gain must be a positive number, got {self.gain!r}")

    def describe(self) -> str:
        parts = []
        for i, ch in enumerate(self.channels):
            label = f"ch{i}: " if len(self.channels) > 1 else ""
            how = "given" if ch.dark_given else "auto"
            text = f"{label}dark {ch.dark:.6g} ({how}), scale {ch.scale:.6g}"
            if ch.binning > 1:
                text += f", binning {ch.binning}x{ch.binning} (SNR {ch.snr:.3g})"
            if self.noise_input:
                bg, bright = ch.noise_condition()
                text += f", noise {bg:.3g} / {bright:.3g}"
            parts.append(text)
        text = "; ".join(parts) + f"; gain {self.gain:g}"
        if self.noise_input:
            text += " (noise: background / bright structures, network units)"
        return text


def strided_sample(array: Any, spatial_axes: Sequence[int], limit: int = SAMPLE_PIXELS):
    """A fixed, shape-determined subsample of ``array`` (numpy or dask): every s-th
    row and column, and every t-th plane, so that about ``limit`` pixels remain.

    Depends only on the shape, so a numpy array and a dask array of the same data
    give the same pixels (and therefore the same decision).
    """
    shape = tuple(array.shape)
    total = int(np.prod(shape, dtype=np.int64))
    if total <= limit:
        return array
    y, x = spatial_axes
    plane = shape[y] * shape[x]
    s = max(1, math.ceil(math.sqrt(plane / limit))) if plane > limit else 1
    index: list[slice] = [slice(None)] * len(shape)
    index[y] = slice(None, None, s)
    index[x] = slice(None, None, s)
    kept_plane = math.ceil(shape[y] / s) * math.ceil(shape[x] / s)
    planes = total // plane
    if planes * kept_plane > limit:
        t = math.ceil(planes * kept_plane / limit)
        lead = [ax for ax in range(len(shape)) if ax not in (y, x)]
        # stride the leading axes from the outermost in, until few enough planes remain
        for ax in lead:
            if t <= 1:
                break
            step = min(t, shape[ax])
            index[ax] = slice(None, None, step)
            t = math.ceil(t / step)
    return array[tuple(index)]


def half_sample_mode(values: np.ndarray) -> float:
    """The half-sample mode (Bickel & Fruehwirth 2006): repeatedly keep the densest
    half of the sorted values. Robust to outliers; finds the sharpest peak."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    while x.size > 3:
        m = (x.size + 1) // 2
        widths = x[m - 1:] - x[:x.size - m + 1]
        i = int(np.argmin(widths))
        x = x[i:i + m]
    if x.size == 3:  # the closer pair
        x = x[:2] if x[1] - x[0] <= x[2] - x[1] else x[1:]
    return float(x.mean())


def _clipped_median(v: np.ndarray, iterations: int) -> tuple[float, float]:
    """(median, sigma) after iterative clipping at +3 / -5 sigma (MAD-based)."""
    med = float(np.median(v))
    sigma = 1.4826 * float(np.median(np.abs(v - med)))
    for _ in range(iterations):
        if sigma <= 0:
            break
        keep = v[(v < med + 3.0 * sigma) & (v > med - 5.0 * sigma)]
        if keep.size < max(16, v.size // 100):
            break
        new = float(np.median(keep))
        new_sigma = 1.4826 * float(np.median(np.abs(keep - new)))
        if new == med and new_sigma == sigma:
            break
        med, sigma = new, new_sigma
    return med, sigma


def estimate_dark_level(values: np.ndarray, iterations: int = 10) -> tuple[float, float]:
    """(dark level, background noise std) of a sample.

    Sparse bright objects (the usual fluorescence / sky image): the sigma-clipped
    median (upper clip 3 sigma: objects are bright; lower 5 sigma: cold pixels).
    A dense field (cells covering most of the image, where that median lies on
    the cells): the half-sample mode - the sharpest histogram peak - of the
    darkest 30 % of the values, used when it lies more than 3 sigma below the
    clipped median. Only the darkest values are searched, so a large flat bright
    region (a saturated area) is never called the background.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no values to estimate a dark level from")
    dark, sigma = _clipped_median(v, iterations)
    low = v[v <= np.percentile(v, LOW_FRACTION * 100)]
    mode = half_sample_mode(low)
    if mode < dark - 3.0 * max(sigma, 1e-12):
        dark = mode
        sigma = 1.4826 * float(np.median(np.abs(low - mode)))
    return dark, sigma


def signal_noise(plane: np.ndarray, dark: float, scale: float) -> float:
    """Noise std at the bright structures of one 2-D plane: the RMS of the diagonal
    (Haar HH) detail of 2 x 2 blocks whose mean lies above ``dark + scale / 4``, leaving
    out blocks with a pixel above ``dark + 4 scale`` (hot pixels, star cores) and the
    largest 1 % of the details. For white noise that detail has the pixel noise's
    variance, while smooth structures (a microscope's blur) give almost none; unlike the
    background noise it grows with the signal's shot noise. NaN when fewer than 32 such
    blocks exist."""
    mean, detail, top = _haar_blocks(plane)
    detail = detail[(mean > dark + 0.25 * scale) & (top <= dark + 4.0 * scale)]
    return _trimmed_rms(detail) if detail.size >= 32 else float("nan")


def _haar_blocks(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 2 x 2 block of a 2-D plane (odd last row / column dropped): its mean, the
    magnitude of its diagonal (Haar HH) detail |a - b - c + d| / 2 - the pixel noise's
    std for white noise, about nothing for smooth structure - and its largest pixel."""
    p = np.asarray(plane, dtype=np.float64)
    h, w = p.shape[0] // 2 * 2, p.shape[1] // 2 * 2
    a, b = p[0:h:2, 0:w:2], p[0:h:2, 1:w:2]
    c, d = p[1:h:2, 0:w:2], p[1:h:2, 1:w:2]
    top = np.maximum(np.maximum(a, b), np.maximum(c, d))
    return (a + b + c + d) / 4, np.abs((a - b - c + d) / 2), top


def _trimmed_rms(detail: np.ndarray) -> float:
    """RMS of block details without their largest 1 % (all of them up to 32)."""
    detail = np.sort(detail)[: max(32, int(detail.size * 0.99))]
    return float(np.sqrt(np.mean(detail * detail)))


def network_input(unit: np.ndarray, condition: Optional[tuple[float, float]] = None
                  ) -> np.ndarray:
    """The network's H x W x 3 input for a gray plane of network values: three copies,
    or (``condition``, for ``noise_input`` models) the plane and two constant planes
    holding the noise level (:meth:`ChannelMapping.noise_condition`)."""
    out = np.empty((*unit.shape, 3), np.float32)
    out[..., 0] = unit
    if condition is None:
        out[..., 1] = unit
        out[..., 2] = unit
    else:
        out[..., 1] = condition[0]
        out[..., 2] = condition[1]
    return out


def background_noise(plane: np.ndarray) -> float:
    """Pixel noise std of the background of one 2-D plane: the RMS of the diagonal (Haar
    HH) detail of the darkest 30 % of its 2 x 2 blocks (by their mean), leaving out the
    largest 1 % of the details. The detail cancels a block's mean and its gradients, so
    dim structure in the background (dense cells, a sky gradient) does not count as
    noise, as it does in the spread of the background values (``noise``, from
    :func:`estimate_dark_level`: 0.8-8x the pixel noise on 12 held-out W2S frames). NaN when
    the plane has fewer than 32 blocks without missing (NaN) pixels."""
    mean, detail, _ = _haar_blocks(plane)
    known = np.isfinite(mean)  # blocks with a missing (NaN) pixel say nothing
    if known.sum() < 32:
        return float("nan")
    mean, detail = mean[known], detail[known]
    return _trimmed_rms(detail[mean <= np.quantile(mean, LOW_FRACTION)])


def choose_binning(snr: float) -> int:
    """The binning factor for a channel of this signal-to-noise ratio
    (:attr:`ChannelMapping.snr`): 2 below :data:`BINNING_SNR`, else 1."""
    return 2 if snr < BINNING_SNR else 1


def decide_channel(sample: np.ndarray, *, integer: bool, dark: Optional[float] = None,
                   binning: Any = "auto", plane: Optional[np.ndarray] = None) -> ChannelMapping:
    """The mapping of one channel from a sample of its values (see the module docstring)."""
    v = np.asarray(sample, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("empty channel")
    est_dark, noise = estimate_dark_level(v)
    given = dark is not None
    if given:
        dark = float(dark)
        if not math.isfinite(dark):
            raise ValueError(f"offset must be a finite number, got {dark!r}")
    lo, hi = (float(q) for q in np.percentile(v, [0.1, REFERENCE_PERCENTILE]))
    if given and dark >= hi and hi > lo:
        # every structure would lie below the dark level and come back flat at it
        raise ValueError(f"offset={dark:.6g} is not below the data: {REFERENCE_PERCENTILE:g} % "
                         f"of the values are at or below {hi:.6g} (range {lo:.6g}..{hi:.6g} "
                         f"between the 0.1th and {REFERENCE_PERCENTILE:g}th percentiles); the "
                         f"offset is the dark level (camera offset / background), under the signal")
    if not given:
        # never so high that more than 0.1 % of the values fall below the network's floor
        # (dark - PEDESTAL / SPAN * scale): solve for the dark level that puts p0.1 there
        r = (PEDESTAL - LOWER_CLIP) / SPAN
        dark = min(est_dark, (lo + r * hi) / (1.0 + r))
    ref = hi - dark
    unit = 1.0 if integer else max(abs(dark), float(np.max(np.abs(v))), 1e-30) * 1e-6
    scale = max(ref, 3.0 * noise, unit)
    sn = signal_noise(plane, dark, scale) if plane is not None else float("nan")
    bg = background_noise(plane) if plane is not None else float("nan")
    mapping = ChannelMapping(dark=dark, scale=scale, noise=noise, dark_given=given,
                             signal_noise=sn, background_noise=bg)
    factor = requested_factor(binning)
    return replace(mapping, binning=choose_binning(mapping.snr) if factor is None else factor)
