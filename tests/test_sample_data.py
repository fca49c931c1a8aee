"""Sample data of the napari plugin: shapes, dtypes, darkness, determinism (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from msrnet_napari import _sample_data as sd  # noqa: E402

SAMPLES = {
    "dark_photo": (sd.dark_photo, (512, 512, 3), np.uint8, True),
    "dark_coffee": (sd.dark_coffee, (400, 600, 3), np.uint8, True),
    "dim_fluorescence": (sd.dim_fluorescence, (512, 512), np.uint16, False),
    "dim_fluorescence_timelapse": (sd.dim_fluorescence_timelapse, (5, 512, 512), np.uint16, False),
}


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_layer_data_tuple(key):
    func, shape, dtype, rgb = SAMPLES[key]
    result = func()
    assert isinstance(result, list) and len(result) == 1
    data, meta, kind = result[0]
    assert kind == "image"
    assert isinstance(data, np.ndarray)
    assert data.shape == shape
    assert data.dtype == dtype
    assert meta["rgb"] is rgb
    assert isinstance(meta["name"], str) and meta["name"]
    if dtype == np.uint16:  # 12-bit camera data
        assert data.max() <= 4095
        assert meta["contrast_limits"] == (0, 4095)


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_deterministic(key):
    func = SAMPLES[key][0]
    a, b = func()[0][0], func()[0][0]
    np.testing.assert_array_equal(a, b)


def test_photos_are_darker_than_the_originals():
    from skimage import data

    for original, dark in ((data.astronaut(), sd.dark_photo()[0][0]),
                           (data.coffee(), sd.dark_coffee()[0][0])):
        assert dark.mean() < 0.5 * original.mean()
        assert dark.max() < 128  # 20x under-exposed: nothing near white
        assert dark.max() > 20  # ... but not black


def test_photo_has_sensor_noise_not_just_a_scale():
    from skimage import data

    flat = np.full((64, 64, 3), 200, dtype=np.uint8)
    dark = sd.darken_photo(flat)
    assert dark.std() > 0.5  # shot + read noise on a flat field
    ref = sd.darken_photo(data.astronaut()[:64, :64], seed=1)
    assert not np.array_equal(ref, sd.darken_photo(data.astronaut()[:64, :64], seed=2))


def test_fluorescence_is_dim_12_bit():
    dim = sd.dim_fluorescence()[0][0]
    # the 12-bit range is barely used: the brightest nuclei sit far below white
    assert np.percentile(dim, 99.9) < 0.2 * 4095
    assert dim.min() >= 0
    assert np.percentile(dim, 1) >= 50  # dark offset of the camera (100 DN) minus noise
    # nuclei brighter than background: there is signal, not just offset + noise
    assert np.percentile(dim, 99) > 2 * np.median(dim) - 100


def test_timelapse_frames_get_dimmer():
    stack = sd.dim_fluorescence_timelapse()[0][0].astype(float)
    means = stack.reshape(stack.shape[0], -1).mean(axis=1)
    assert np.all(np.diff(means) < 0)


def test_darken_photo_rejects_non_uint8():
    with pytest.raises(TypeError):
        sd.darken_photo(np.zeros((4, 4), dtype=np.float32))


def test_real_fluorescence_sample_is_bundled_with_its_licence():
    from pathlib import Path

    layers = sd.u2os_cells()
    assert len(layers) == 3
    for data, meta, kind in layers:
        assert kind == "image" and data.dtype == np.uint16 and data.shape == (395, 695)
        assert data.max() <= 4095 and np.median(data) > 100  # 12-bit counts with a dark offset
        lo, hi = meta["contrast_limits"]
        assert lo < hi and meta["blending"] == "additive"
    licence = Path(sd.__file__).parent / "samples" / "bbbc022_LICENSE.txt"
    assert "CC0" in licence.read_text()
