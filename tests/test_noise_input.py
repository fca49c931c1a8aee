"""Noise-level input (``config.noise_input``): a linear network told how noisy the image is.

Input channels 1 and 2 carry the channel's noise level in network units (background,
bright structures: ChannelMapping.noise_condition) instead of copies of the gray plane.
Data-path tests use an identity network, whose output (the mean of its three channels)
is then (u + c_background + c_bright) / 3: what it was told can be read off the result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from msrnet_napari import enhance, scaling_for
from msrnet_napari.config import MSRNetConfig
from msrnet_napari.intensity import PlaneIO
from msrnet_napari.linear_intensity import (
    NOISE_CEILING,
    PEDESTAL,
    SPAN,
    ChannelMapping,
    background_noise,
    decide_channel,
    estimate_dark_level,
    network_input,
    strided_sample,
)

from conftest import random_weights

NOISE_ID = random_weights(MSRNetConfig(log_bases=(1e-4,), depth=2, width=4, intensity="linear",
                                       noise_input=True), identity=True)


def _camera(shape=(96, 96), photons=40.0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    clean = 4 * np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / 80.0)
    counts = rng.poisson(photons * (0.1 + clean)) * 2.0 + rng.normal(0, 2.0, shape)
    return np.clip(np.rint(100 + counts), 0, 4095).astype(np.uint16)


def _told(out, img, mapping: ChannelMapping) -> np.ndarray:
    """c_background + c_bright per pixel, read off the identity network's output."""
    u_in = mapping.to_network(img).astype(np.float64)
    u_out = PEDESTAL + SPAN * (out.astype(np.float64) - mapping.dark) / mapping.scale
    return 3 * u_out - u_in


def test_config_key_is_linear_only_and_absent_when_off():
    cfg = MSRNetConfig(intensity="linear", noise_input=True)
    assert cfg.to_dict()["noise_input"] is True
    assert MSRNetConfig.from_dict(cfg.to_dict()) == cfg
    assert "noise_input" not in MSRNetConfig(intensity="linear").to_dict()  # old files alike
    with pytest.raises(ValueError, match="linear intensity model"):
        MSRNetConfig(noise_input=True)
    with pytest.raises(ValueError, match="true or false"):
        MSRNetConfig(intensity="linear", noise_input=1)


def test_noise_condition_is_the_noise_in_network_units():
    m = ChannelMapping(dark=100.0, scale=400.0, noise=4.0, signal_noise=20.0)
    bg, bright = m.noise_condition()
    assert bg == pytest.approx(4.0 * SPAN / 400.0) and bright == pytest.approx(20.0 * SPAN / 400.0)
    assert m.noise_condition(2) == pytest.approx((bg / 2, bright / 2))  # 2 x 2 box means
    unknown = ChannelMapping(dark=100.0, scale=400.0, noise=4.0)  # too few bright pixels
    assert unknown.noise_condition() == pytest.approx((bg, bg))
    loud = ChannelMapping(dark=0.0, scale=1.0, noise=1e3, signal_noise=1e4)
    assert loud.noise_condition() == (NOISE_CEILING, NOISE_CEILING)
    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(network_input(x), np.repeat(x[..., None], 3, axis=-1))
    told = network_input(x, (0.1, 0.2))
    assert np.array_equal(told[..., 0], x) and np.all(told[..., 1] == np.float32(0.1)) \
        and np.all(told[..., 2] == np.float32(0.2))


def test_the_network_is_told_the_decided_noise_level():
    img = _camera()
    out, d = enhance(img, weights=NOISE_ID, binning=1, dtype=np.float32, return_decision=True)
    assert d.linear.noise_input and "noise" in d.describe()
    ch = d.linear.channels[0]
    bg, bright = ch.noise_condition()
    # the estimate: Poisson-Gaussian noise of the background and of the bright blob
    assert ch.noise == pytest.approx(2.0 * math.sqrt(4.0 + 1.0), rel=0.2)
    assert bright > bg > 0
    told = _told(out, img, ch)
    assert np.abs(told - (bg + bright)).max() < 2e-3
    # binned 2 x 2: the box means' noise, half as large
    out2, d2 = enhance(img, weights=NOISE_ID, binning=2, dtype=np.float32, return_decision=True)
    told2 = _told(out2, img, d2.linear.channels[0])
    assert np.median(told2) == pytest.approx((bg + bright) / 2, abs=2e-3)


def test_one_noise_level_per_array_for_stacks_blocks_and_parts():
    stack = np.stack([_camera(seed=s, photons=p) for s, p in ((0, 40.0), (1, 400.0))])
    whole, d = enhance(stack, weights=NOISE_ID, dtype=np.float32, return_decision=True)
    part = enhance(stack[1], weights=NOISE_ID, scaling=d)
    np.testing.assert_array_equal(whole[1], part)
    own = enhance(stack[1], weights=NOISE_ID, dtype=np.float32)  # its own, other noise level
    assert np.abs(own - part).max() > 0.1
    da = pytest.importorskip("dask.array")
    lazy = enhance(da.from_array(stack, chunks=(1, 48, 48)), weights=NOISE_ID, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(lazy), whole, atol=1e-3)


def test_decisions_are_not_mixed_between_noise_and_plain_weights():
    plain = random_weights(MSRNetConfig(log_bases=(1e-4,), depth=2, width=4,
                                        intensity="linear"), identity=True)
    img = _camera()
    with pytest.raises(ValueError, match="noise level"):
        enhance(img, weights=NOISE_ID, scaling=scaling_for(img, weights=plain))
    with pytest.raises(ValueError, match="noise level"):
        enhance(img, weights=plain, scaling=scaling_for(img, weights=NOISE_ID))


def test_plane_io_puts_the_level_in_channels_one_and_two():
    img = _camera()
    d = scaling_for(img, weights=NOISE_ID, binning=2)
    io = PlaneIO(d, d.layout_for(img.shape))
    x = io.to_network(0, img)
    c = d.linear.channels[0].noise_condition(2)
    assert io.condition(0) == c
    assert np.all(x[..., 1] == np.float32(c[0])) and np.all(x[..., 2] == np.float32(c[1]))
    plain = scaling_for(img, model="microscopy")
    assert PlaneIO(plain, plain.layout_for(img.shape)).condition(0) is None


def test_given_range_still_estimates_the_noise():
    img = _camera()
    d = scaling_for(img, weights=NOISE_ID, intensity_range=(100, 400))
    ch = d.linear.channels[0]
    assert ch.dark_given and ch.scale == 300 and ch.noise > 0 and ch.background_noise > 0
    assert ch.noise_condition()[0] == pytest.approx(ch.background_noise * SPAN / 300)


def test_background_noise_is_the_pixel_noise_not_dim_structure():
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:256, :256]
    dim = 30 * (1 + np.sin(xx / 9.0) * np.cos(yy / 13.0))  # dense dim structure, no flat sky
    img = 100 + dim + rng.normal(0, 3.0, dim.shape)
    assert background_noise(img) == pytest.approx(3.0, rel=0.1)
    spread = estimate_dark_level(strided_sample(img, (0, 1)))[1]
    assert spread > 2 * 3.0  # the values' spread counts the structure as noise
    d = decide_channel(img.ravel(), integer=False, plane=img)
    assert d.background_noise == pytest.approx(3.0, rel=0.1)
    assert np.isnan(background_noise(np.zeros((8, 8))))  # too few blocks
    # without a plane (no neighbours to look at) the condition falls back on the spread
    m = ChannelMapping(dark=0.0, scale=100.0, noise=2.0)
    assert m.noise_condition()[0] == pytest.approx(2.0 * SPAN / 100.0)


def test_flat_response_is_measured_per_noise_level():
    pytest.importorskip("msrnet_napari._core")
    from msrnet_napari.engine import Engine
    from msrnet_napari.linearity import flat_response, measure_flat_response

    engine = Engine(NOISE_ID, device="cpu")
    a = measure_flat_response(engine, condition=(0.01, 0.02))
    b = measure_flat_response(engine, condition=(0.1, 0.2))
    # the identity network returns its input channels (u, c1, c2) on flat inputs
    np.testing.assert_allclose(a.response[0], a.levels, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(a.response[1:], np.broadcast_to([[0.01], [0.02]], (2, a.levels.size)),
                               atol=1e-4)
    np.testing.assert_allclose(b.response[1:], np.broadcast_to([[0.1], [0.2]], (2, b.levels.size)),
                               atol=1e-4)
    assert flat_response(engine, (0.1, 0.2)) is None  # flat channels: not a restoration
    # kept per level: without one (three copies) the identity is a usable response
    kept = flat_response(engine)
    assert kept is not None and flat_response(engine) is kept


def test_adding_the_noise_input_keeps_a_trained_network_and_fine_tunes(tmp_path):
    torch = pytest.importorskip("torch")
    from msrnet_napari.checkpoint import load_checkpoint
    from msrnet_napari.models import model_info
    from msrnet_napari.training import widen as wd
    from msrnet_napari.training.model import model_from_checkpoint

    src = model_info("microscopy").path
    out = tmp_path / "noise.pt"
    assert wd.main([str(src), str(out), "--noise-input"]) == 0
    assert load_checkpoint(out).config.noise_input
    old, new = model_from_checkpoint(src), model_from_checkpoint(out)
    x = torch.rand(1, 1, 30, 30).repeat(1, 3, 1, 1)
    told = x.clone()
    told[:, 1], told[:, 2] = 0.02, 0.05
    with torch.no_grad():
        assert float((old(x) - new(told)).abs().max()) < 1e-5  # the level is not read yet
    with pytest.raises(ValueError, match="already"):
        wd.add_noise_input(new)
    # the product path: same restoration, the noise level going into channels 1 and 2
    img = _camera(photons=200.0)
    a = enhance(img, model="microscopy", dtype=np.float32)
    b = enhance(img, weights=str(out), dtype=np.float32)
    assert np.abs(a - b).max() < 0.05 * float(np.std(img))


def test_training_pairs_carry_the_noise_level_enhance_would_estimate():
    pytest.importorskip("torch")
    from msrnet_napari.training import microscopy_data as md
    from msrnet_napari.training import train_microscopy as tm

    rng = np.random.default_rng(0)
    clean = np.clip(rng.random((128, 128)) ** 4, 0, 1)
    plain = md.synthetic_pair(clean, 64, np.random.default_rng(3), peak=30.0, center=True)
    x, y, c = md.synthetic_pair(clean, 64, np.random.default_rng(3), peak=30.0, center=True,
                                condition=True)
    assert np.array_equal(plain[0], x) and np.array_equal(plain[1], y)  # the same pair
    quiet = md.synthetic_pair(clean, 64, np.random.default_rng(3), peak=3000.0, center=True,
                              condition=True)[2]
    assert 0 < quiet[0] < c[0] and 0 < quiet[1] < c[1]  # more photons, less noise
    batch = tm.network_inputs(np.stack([x, x]), np.array([c, quiet], np.float32))
    assert batch.shape == (2, 3, 64, 64) and np.array_equal(batch[:, 0], np.stack([x, x]))
    assert np.all(batch[1, 2] == np.float32(quiet[1])) and np.all(batch[0, 1] == np.float32(c[0]))
    binned = tm.network_input(x, c, factor=2)
    assert np.all(binned[..., 1] == np.float32(c[0] / 2))
