"""The linear intensity model (scientific data): decisions, the data path, the default model.

Data-path tests use an identity network (``random_weights(identity=True)``, no
torch), so what they see is the intensity mapping itself; the last tests run the
bundled microscopy model on synthetic Poisson data and check what users measure.
"""

from __future__ import annotations

import numpy as np
import pytest

import msrnet_napari
from msrnet_napari import enhance, scaling_for
from msrnet_napari.config import MSRNetConfig
from msrnet_napari.linear_intensity import (
    PEDESTAL,
    SPAN,
    UPPER_CLIP,
    decide_channel,
    estimate_dark_level,
    strided_sample,
)
from msrnet_napari.models import default_model_for

from conftest import random_weights

LINEAR_ID = random_weights(MSRNetConfig(log_bases=(1e-4,), depth=2, width=4, intensity="linear"),
                           identity=True)


def blobs(shape=(128, 128), n=12, seed=0, sigma=4.0):
    """Clean sparse Gaussian blobs in [0, 1] and their (y, x, amplitude)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    clean = np.zeros(shape)
    spots = []
    for _ in range(n):
        cy, cx = rng.uniform(12, shape[0] - 12), rng.uniform(12, shape[1] - 12)
        amp = rng.uniform(0.2, 1.0)
        clean += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        spots.append((cy, cx, amp))
    return clean, spots


def camera(clean, photons=50.0, offset=100.0, adu=2.0, read=2.0, seed=1, bits=12):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(clean * photons) * adu + rng.normal(0, read, clean.shape)
    return np.clip(np.rint(offset + counts), 0, 2**bits - 1).astype(np.uint16)


# ------------------------------------------------------------------ decisions

def test_dark_level_is_the_background_not_the_objects():
    clean, _ = blobs((256, 256), n=30)
    noisy = camera(clean, offset=100)
    dark, noise = estimate_dark_level(noisy)
    assert abs(dark - 100) <= 1.5  # the median background, not pulled up by the blobs
    assert 1.0 < noise < 6.0  # read noise 2 ADU + shot noise of ~0 photons


def test_hot_pixels_do_not_move_the_scale():
    clean, _ = blobs((256, 256), n=30)
    noisy = camera(clean)
    hot = noisy.copy()
    hot.flat[[5, 999, 40_000, 60_001, 12_345]] = 4095
    a, b = decide_channel(noisy, integer=True), decide_channel(hot, integer=True)
    assert abs(a.dark - b.dark) <= 0.5
    assert abs(a.scale - b.scale) / a.scale < 0.02
    # the max-based bit-depth rule of the photo model would jump here; the linear one does not


def test_flat_frame_gets_a_sane_scale():
    flat = np.full((64, 64), 120, np.uint16)
    ch = decide_channel(flat, integer=True)
    assert ch.dark == 120 and ch.scale >= 1.0


def test_strided_sample_depends_only_on_shape():
    da = pytest.importorskip("dask.array")
    data = np.random.default_rng(0).integers(0, 4000, (6, 700, 900)).astype(np.uint16)
    a = strided_sample(data, (1, 2), limit=50_000)
    b = strided_sample(da.from_array(data, chunks=(1, 300, 300)), (1, 2), limit=50_000).compute()
    np.testing.assert_array_equal(a, b)
    assert 20_000 < a.size <= 2 * 50_000  # about the limit


def test_default_model_rule():
    assert default_model_for(np.uint8, rgb=True) == "photo"
    assert default_model_for(np.float32, rgb=True) == "photo"
    assert default_model_for(np.uint16, rgb=True) == "microscopy"  # 3-channel 16-bit composite
    assert default_model_for(np.uint8, rgb=False) == "microscopy"
    assert default_model_for(np.float32, rgb=False) == "microscopy"


def test_available_models_lists_the_bundled_ones():
    names = msrnet_napari.available_models()
    assert "photo" in names
    with pytest.raises(ValueError, match="unknown model"):
        enhance(np.zeros((8, 8), np.uint8), model="nope")


def test_photo_only_options_are_refused_for_linear_and_vice_versa():
    img = camera(blobs()[0])
    with pytest.raises(ValueError, match="exposure_gain applies to the photo"):
        scaling_for(img, weights=LINEAR_ID, exposure_gain=2.0)
    with pytest.raises(ValueError, match="bit_depth applies to the photo"):
        scaling_for(img, weights=LINEAR_ID, bit_depth=12)
    photo = random_weights()
    with pytest.raises(ValueError, match="offset applies to the linear"):
        scaling_for(img, weights=photo, offset=100)
    with pytest.raises(ValueError, match="gain must be a positive"):
        scaling_for(img, weights=LINEAR_ID, gain=-1)
    with pytest.raises(ValueError, match="offset must be"):
        scaling_for(img, weights=LINEAR_ID, offset="dark")


# ------------------------------------------------------------------ the data path

def test_identity_network_returns_the_input_in_its_units():
    img = camera(blobs()[0])
    out, d = enhance(img, weights=LINEAR_ID, binning=1, return_decision=True)
    assert out.dtype == np.uint16 and out.shape == img.shape
    assert d.intensity == "linear" and d.model == "checkpoint"
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 2  # linear, no tone curve
    assert "dark" in d.describe() and "scale" in d.describe()


def test_gain_scales_the_signal_above_the_dark_level_and_clips_at_dtype_max():
    img = camera(blobs()[0], offset=100)
    out = enhance(img, weights=LINEAR_ID, binning=1, offset=100, gain=4.0)
    expected = np.clip(100 + 4.0 * (img.astype(float) - 100), 0, 65535)
    assert np.abs(out.astype(float) - expected).max() <= 6
    hot = img.copy()
    hot[10, 10] = 4095
    out = enhance(hot, weights=LINEAR_ID, binning=1, offset=100, gain=40.0)
    assert out[10, 10] == 65535  # clipped at the dtype's max only, never wrapped
    assert out.max() == 65535 and out.min() >= 0


def test_offset_is_used_as_given_and_recorded():
    img = camera(blobs()[0], offset=300)
    d = scaling_for(img, weights=LINEAR_ID, offset=250)
    ch = d.linear.channels[0]
    assert ch.dark == 250 and ch.dark_given
    auto = scaling_for(img, weights=LINEAR_ID).linear.channels[0]
    assert abs(auto.dark - 300) <= 1.5 and not auto.dark_given
    out = enhance(img, weights=LINEAR_ID, binning=1, offset=250, gain=2.0)
    np.testing.assert_allclose(np.median(out), 250 + 2 * (np.median(img) - 250), atol=3)


def test_pixels_above_the_network_range_pass_through():
    img = camera(blobs()[0])
    img[64, 64] = 4000  # far above the reference level: a star core / hot pixel
    d = scaling_for(img, weights=LINEAR_ID)
    ch = d.linear.channels[0]
    assert PEDESTAL + SPAN * (4000 - ch.dark) / ch.scale > UPPER_CLIP
    out = enhance(img, weights=LINEAR_ID, binning=1)
    assert out[64, 64] == 4000  # not saturated at the network's ceiling


def test_stack_and_dask_use_the_whole_arrays_decision():
    da = pytest.importorskip("dask.array")
    clean, _ = blobs()
    frames = np.stack([camera(clean * f, seed=i) for i, f in enumerate((1.0, 0.6, 0.3))])
    eager, d = enhance(frames, weights=LINEAR_ID, binning=1, return_decision=True)
    assert len(d.linear.channels) == 1  # one decision for the whole stack
    lazy = enhance(da.from_array(frames, chunks=(1, 64, 64)), weights=LINEAR_ID, binning=1)
    np.testing.assert_array_equal(np.asarray(lazy), eager)
    # bleaching is kept: frame means still fall like the input's (not normalised per frame)
    ratios_in = frames.reshape(3, -1).mean(1) - 100
    ratios_out = eager.reshape(3, -1).astype(float).mean(1) - 100
    np.testing.assert_allclose(ratios_out / ratios_out[0], ratios_in / ratios_in[0], atol=0.02)
    # one plane enhanced with the whole stack's decision equals that plane of the stack
    plane = enhance(frames[2:3], weights=LINEAR_ID, scaling=d)
    np.testing.assert_array_equal(plane, eager[2:3])


def test_channels_get_their_own_dark_level():
    clean, _ = blobs()
    two = np.stack([camera(clean, offset=100), camera(clean, offset=1000, seed=3)])
    out, d = enhance(two, weights=LINEAR_ID, binning=1, channel_axis=0, return_decision=True)
    darks = [c.dark for c in d.linear.channels]
    assert abs(darks[0] - 100) < 2 and abs(darks[1] - 1000) < 2
    assert np.abs(out.astype(int) - two.astype(int)).max() <= 3
    da = pytest.importorskip("dask.array")
    lazy = enhance(da.from_array(two, chunks=(1, 64, 64)), weights=LINEAR_ID, binning=1, channel_axis=0)
    np.testing.assert_array_equal(np.asarray(lazy), out)


def test_rgb_shaped_linear_data_is_three_channels():
    clean, _ = blobs()
    comp = np.stack([camera(clean, offset=o, seed=o) for o in (100, 200, 400)], axis=-1)
    out, d = enhance(comp, weights=LINEAR_ID, binning=1, return_decision=True)
    assert out.shape == comp.shape and len(d.linear.channels) == 3
    assert np.abs(out.astype(int) - comp.astype(int)).max() <= 3  # channels are not mixed


def test_float_and_wide_integer_data_keep_their_units():
    clean, _ = blobs()
    f = (1000.0 + 5000.0 * clean + np.random.default_rng(0).normal(0, 20, clean.shape))
    out = enhance(f, weights=LINEAR_ID, binning=1)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, f, atol=0.01 * 5000)
    for dt in (np.uint32, np.int32, np.int16, np.int64):
        img = (camera(clean).astype(np.int64) + 20).astype(dt)
        res = enhance(img, weights=LINEAR_ID, binning=1)
        assert res.dtype == dt and np.abs(res.astype(np.int64) - img.astype(np.int64)).max() <= 3
    white = np.full((32, 32), np.iinfo(np.uint32).max, np.uint32)
    white[:16] = 0
    res = enhance(white, weights=LINEAR_ID, binning=1, offset=0)
    assert res[20, 20] == np.iinfo(np.uint32).max  # the white level never wraps to 0


def test_nan_pixels_are_missing_values_kept_missing():
    """Float data with NaN (masked pixels, mosaic borders): the decision ignores them, the
    network sees the dark level there, the output has NaN exactly where the input had."""
    da = pytest.importorskip("dask.array")
    clean, _ = blobs()
    f = 1000.0 + 5000.0 * clean + np.random.default_rng(0).normal(0, 20, clean.shape)
    holes = f.copy()
    holes[:, :10] = np.nan  # a border
    holes[60:64, 70:90] = np.nan  # a masked strip
    out, d = enhance(holes, weights=LINEAR_ID, binning=1, return_decision=True)
    missing = np.isnan(holes)
    np.testing.assert_array_equal(np.isnan(out), missing)
    ref = scaling_for(holes[~missing].reshape(1, -1), weights=LINEAR_ID, binning=1)
    assert d.linear.channels[0].dark == ref.linear.channels[0].dark  # NaN left out
    filled = np.where(missing, d.linear.channels[0].dark, holes)
    np.testing.assert_array_equal(out[~missing], enhance(filled, weights=LINEAR_ID,
                                                         scaling=d)[~missing])
    lazy = np.asarray(enhance(da.from_array(holes, chunks=32), weights=LINEAR_ID, binning=1))
    np.testing.assert_array_equal(np.isnan(lazy), missing)  # float rounding apart (tiles):
    np.testing.assert_allclose(lazy[~missing], out[~missing], rtol=0, atol=1e-6 * 5000 / SPAN)
    with pytest.raises(ValueError, match="cannot hold: pass a float dtype"):
        enhance(holes, weights=LINEAR_ID, binning=1, dtype=np.uint16)
    with pytest.raises(ValueError, match="all NaN"):
        enhance(np.full((16, 16), np.nan), weights=LINEAR_ID)
    inf = f.copy()
    inf[3, 3] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        enhance(inf, weights=LINEAR_ID)


# ------------------------------------------------------------ the bundled model

needs_micro = pytest.mark.skipif("microscopy" not in msrnet_napari.available_models(),
                                 reason="bundled microscopy model not installed")


def _fit_r2(x, y):
    A = np.stack([x.ravel(), np.ones(x.size)], 1)
    coef, *_ = np.linalg.lstsq(A, y.ravel(), rcond=None)
    pred = A @ coef
    return 1 - np.sum((y.ravel() - pred) ** 2) / np.sum((y.ravel() - y.mean()) ** 2)


@needs_micro
def test_microscopy_model_denoises_linearly_and_keeps_the_background():
    from scipy.stats import spearmanr

    clean, spots = blobs((192, 192), n=16, seed=4)
    expected = 100 + 2.0 * 30 * clean  # 30 photons at the brightest blob, offset 100
    noisy = camera(clean, photons=30, seed=5)
    out, d = enhance(noisy, return_decision=True)
    assert d.model == "microscopy"
    r2_in, r2_out = _fit_r2(expected, noisy.astype(float)), _fit_r2(expected, out.astype(float))
    assert r2_out > r2_in + 0.02 and r2_out > 0.95
    background = clean < 0.01
    full_scale = 4095
    assert abs(np.median(out[background]) - 100) < 0.02 * full_scale
    yy, xx = np.mgrid[:192, :192]
    means_in, means_out = [], []
    for cy, cx, _ in spots:
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
        means_in.append(expected[disk].mean())
        means_out.append(out[disk].mean())
    assert spearmanr(means_in, means_out).correlation >= 0.95
    # no dark halo: the ring around each blob is not below the background by more than the noise
    noise = d.linear.channels[0].noise
    for cy, cx, _ in spots:
        ring = ((yy - cy) ** 2 + (xx - cx) ** 2 >= 100) & ((yy - cy) ** 2 + (xx - cx) ** 2 <= 196)
        assert np.median(out[ring]) >= 100 - noise


def test_an_offset_above_the_data_is_refused():
    """offset= above 99.9 % of the values would return a flat image at the offset (all
    structure below the dark level): a clear error instead, naming the data's range."""
    x = (np.random.default_rng(0).poisson(5, (64, 64)) + 100).astype(np.uint16)
    with pytest.raises(ValueError, match=r"offset=10000 is not below the data.*100\.\.1"):
        enhance(x, model="microscopy", offset=10000)
    with pytest.raises(ValueError, match="not below the data"):
        scaling_for(x, model="microscopy", offset=[10000])
    out = enhance(x, model="microscopy", offset=100)  # the real offset: fine
    assert abs(float(out.mean()) - float(x.mean())) < 1.0
    flat = np.full((32, 32), 120, np.uint16)  # a flat frame at its own offset is no error
    assert np.all(enhance(flat, model="microscopy", offset=120) == 120)
