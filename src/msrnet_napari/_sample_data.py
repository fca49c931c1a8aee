"""Sample data for the napari plugin: low-light versions of images bundled with scikit-image.

Everything is generated at call time from images that ship inside the
scikit-image wheel (no network, no files in this package), with a simple,
deterministic camera model:

photo (8-bit sRGB)
    decode the sRGB gamma -> scale the exposure (x 0.05) -> photon shot noise
    (Poisson, full well 4000 e-) + read noise (Gaussian, 2 e- rms) -> encode
    with the sRGB gamma -> uint8.

fluorescence (12-bit, linear camera)
    the hematoxylin (nuclear) stain of ``skimage.data.immunohistochemistry``,
    separated by colour deconvolution, stands in for a nuclear fluorescence
    channel -> ~60 photons at the brightest nuclei -> Poisson + Gaussian read
    noise -> 12-bit counts with a dark offset of 100 DN, stored as uint16.

real fluorescence (12-bit, 3 channels)
    a crop of BBBC022 (U2OS cells, Cell Painting; Gustafsdottir et al. 2013, Broad
    Bioimage Benchmark Collection, CC0: ``samples/bbbc022_LICENSE.txt``), stored as
    recorded (uint16, 12-bit camera counts with their dark offset) - the real data
    the microscopy model is for.

Every function uses a fixed seed, so it returns the same array on every call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .exposure import linear_to_srgb, srgb_to_linear

LayerDataTuple = tuple[np.ndarray, dict[str, Any], str]

FULL_WELL = 4000.0  # electrons at a "white" pixel for a normal exposure
READ_NOISE = 2.0  # electrons rms
SEED = 20171106  # MSR-net arXiv date; any fixed number works


def darken_photo(
    image: np.ndarray,
    *,
    exposure: float = 0.05,
    full_well: float = FULL_WELL,
    read_noise: float = READ_NOISE,
    seed: int = SEED,
) -> np.ndarray:
    """Simulate an under-exposed, noisy 8-bit photo of ``image`` (uint8, any shape)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected uint8 sRGB data, got {image.dtype}")
    rng = np.random.default_rng(seed)
    linear = srgb_to_linear(image.astype(np.float64) / 255.0)
    electrons = rng.poisson(linear * exposure * full_well).astype(np.float64)
    electrons += rng.normal(0.0, read_noise, size=electrons.shape)
    dark = linear_to_srgb(electrons / full_well)
    return np.rint(dark * 255.0).astype(np.uint8)


def darken_fluorescence(
    signal: np.ndarray,
    *,
    photons: float = 60.0,
    gain: float = 4.0,
    offset: float = 100.0,
    read_noise: float = READ_NOISE,
    bits: int = 12,
    seed: int = SEED,
) -> np.ndarray:
    """Simulate a dim linear camera frame of ``signal`` (float in [0, 1]) as uint16 counts.

    ``photons`` is the expected photon count at signal 1; ``gain`` is DN per
    electron; ``offset`` the camera's dark level; values clip at ``2**bits - 1``.
    """
    rng = np.random.default_rng(seed)
    electrons = rng.poisson(np.clip(signal, 0.0, 1.0) * photons).astype(np.float64)
    electrons += rng.normal(0.0, read_noise, size=electrons.shape)
    counts = np.rint(electrons * gain + offset)
    return np.clip(counts, 0, 2**bits - 1).astype(np.uint16)


def _nuclear_signal() -> np.ndarray:
    """Hematoxylin density of the bundled IHC image, scaled to [0, 1] (float64, 512 x 512)."""
    from skimage import color, data

    hematoxylin = color.rgb2hed(data.immunohistochemistry())[..., 0]
    hematoxylin -= np.percentile(hematoxylin, 1.0)
    signal = hematoxylin / np.percentile(hematoxylin, 99.8)
    return np.clip(signal, 0.0, 1.0)


def dark_photo() -> list[LayerDataTuple]:
    """skimage's astronaut (512 x 512 RGB), under-exposed 20x with sensor noise (uint8)."""
    from skimage import data

    dark = darken_photo(data.astronaut())
    return [(dark, {"name": "astronaut (dark)", "rgb": True}, "image")]


def dark_coffee() -> list[LayerDataTuple]:
    """skimage's coffee (400 x 600 RGB), under-exposed 20x with sensor noise (uint8)."""
    from skimage import data

    dark = darken_photo(data.coffee(), seed=SEED + 1)
    return [(dark, {"name": "coffee (dark)", "rgb": True}, "image")]


def dim_fluorescence() -> list[LayerDataTuple]:
    """A dim 12-bit nuclear-stain image (512 x 512 uint16, values <= 4095)."""
    dim = darken_fluorescence(_nuclear_signal())
    meta = {"name": "nuclei (dim, 12-bit)", "rgb": False, "colormap": "gray",
            "contrast_limits": (0, 4095)}
    return [(dim, meta, "image")]


def dim_fluorescence_timelapse(frames: int = 5) -> list[LayerDataTuple]:
    """A bleaching time-lapse: ``frames`` x 512 x 512 uint16, each frame ~25% dimmer.

    Useful to try the widget's "Whole stack" option.
    """
    signal = _nuclear_signal()
    stack = np.stack([
        darken_fluorescence(signal, photons=120.0 * 0.75**t, seed=SEED + t)
        for t in range(frames)
    ])
    meta = {"name": "nuclei time-lapse (dim, 12-bit)", "rgb": False, "colormap": "gray",
            "contrast_limits": (0, 4095), "axis_labels": ("t", "y", "x")}
    return [(stack, meta, "image")]


def u2os_cells() -> list[LayerDataTuple]:
    """Real 3-channel 12-bit widefield fluorescence of U2OS cells (BBBC022 crop, CC0).

    Three layers (channels w1, w2, w3 of the BBBC022 image set; w1 is the Hoechst
    DNA stain), uint16 camera counts as recorded, dark offset ~150 DN.
    """
    from pathlib import Path

    path = Path(__file__).resolve().parent / "samples" / "bbbc022_u2os.npz"
    with np.load(path) as f:
        data = np.asarray(f["data"])
    layers = []
    for i, (name, cmap) in enumerate((("w1 Hoechst", "blue"), ("w2", "green"), ("w3", "magenta"))):
        chan = data[i]
        lo, hi = (float(v) for v in np.percentile(chan, [0.5, 99.8]))
        layers.append((chan, {"name": f"U2OS {name} (BBBC022)", "colormap": cmap,
                              "blending": "additive", "contrast_limits": (lo, hi)}, "image"))
    return layers
