"""Cycle-spun binning for photon-starved linear data (msrnet_napari.binning)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import msrnet_napari
from msrnet_napari import binning
from msrnet_napari.linear_intensity import BINNING_SNR, ChannelMapping, choose_binning


def _identity(u, _cb):
    return u.copy()


def _poisson_scene(photons: float, shape=(160, 150), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    clean = np.zeros(shape)
    for cy, cx, a in ((40, 40, 1.0), (100, 90, 0.6), (60, 120, 0.3)):
        clean += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))
    counts = rng.poisson(photons * clean) + rng.normal(0, 1.5, shape)
    return np.clip(np.rint(100 + counts), 0, 65535).astype(np.uint16), 100 + photons * clean


def test_factor_one_is_the_plain_call():
    u = np.random.default_rng(1).random((9, 7, 3), dtype=np.float32)
    assert np.array_equal(binning.run_binned(_identity, u, 1), u)


def test_binned_identity_is_the_box_mean_averaged_over_phases():
    rng = np.random.default_rng(2)
    u = rng.random((11, 13, 3), dtype=np.float32)
    out = binning.run_binned(_identity, u, 2)
    # pixel (y, x) = mean of the four 2x2 block means containing it (edges reflected)
    p = np.pad(u, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    y, x = 5, 6
    blocks = [p[y + dy:y + dy + 2, x + dx:x + dx + 2].mean(axis=(0, 1))
              for dy in range(2) for dx in range(2)]
    np.testing.assert_allclose(out[y, x], np.mean(blocks, axis=0), rtol=1e-6)
    assert out.shape == u.shape


def test_binned_restoration_is_linear_and_keeps_constants():
    rng = np.random.default_rng(3)
    u = rng.random((20, 17, 3), dtype=np.float32)
    a = binning.run_binned(_identity, u, 3)
    b = binning.run_binned(_identity, 2 * u + 0.5, 3)
    np.testing.assert_allclose(b, 2 * a + 0.5, rtol=1e-5, atol=1e-6)
    flat = np.full((10, 10, 3), 0.3, np.float32)
    np.testing.assert_allclose(binning.run_binned(_identity, flat, 2), flat, rtol=1e-6)


def test_halo_covers_the_binned_receptive_field():
    assert binning.halo(1, 11) == 11
    assert binning.halo(2, 11) == 24


@pytest.mark.parametrize("bad", [0, 5, 1.5, "two", True, -1])
def test_bad_factors_are_refused(bad):
    x, _ = _poisson_scene(5)
    with pytest.raises(ValueError, match="binning"):
        msrnet_napari.scaling_for(x, model="microscopy", binning=bad)


def test_photo_model_refuses_binning():
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="binning applies to the linear"):
        msrnet_napari.enhance(img, model="photo", binning=2)


def test_rule_bins_photon_starved_data_only():
    assert choose_binning(BINNING_SNR / 2) == 2 and choose_binning(BINNING_SNR * 2) == 1
    starved, _ = _poisson_scene(4)
    bright, _ = _poisson_scene(3000)
    d_starved = msrnet_napari.scaling_for(starved, model="microscopy")
    d_bright = msrnet_napari.scaling_for(bright, model="microscopy")
    assert d_starved.linear.channels[0].binning == 2
    assert "binning 2x2" in d_starved.describe()
    assert d_bright.linear.channels[0].binning == 1
    assert msrnet_napari.scaling_for(starved, model="microscopy", binning=1).linear.channels[0].binning == 1


def test_snr_falls_back_to_background_noise_without_bright_pixels():
    ch = ChannelMapping(dark=0.0, scale=10.0, noise=2.0)
    assert ch.snr == pytest.approx(5.0)
    assert ChannelMapping(dark=0.0, scale=10.0, noise=2.0, signal_noise=0.5).snr == pytest.approx(20.0)


def test_binning_helps_at_a_few_photons():
    x, ref = _poisson_scene(4, seed=4)
    one = msrnet_napari.enhance(x, model="microscopy", binning=1, dtype=np.float32, threads=1)
    two = msrnet_napari.enhance(x, model="microscopy", binning=2, dtype=np.float32, threads=1)
    assert np.mean((two - ref) ** 2) < np.mean((one - ref) ** 2)
    bg = ref < 100.5
    assert abs(float(np.median(two[bg])) - 100.0) < 1.0  # the background stays at the offset


def test_bands_tiles_and_dask_blocks_give_the_whole_plane_result(monkeypatch):
    da = pytest.importorskip("dask.array")
    x, _ = _poisson_scene(4, shape=(203, 97), seed=5)
    whole = msrnet_napari.enhance(x, model="microscopy", binning=2, tile=0, dtype=np.float32,
                                  threads=1)
    tiled = msrnet_napari.enhance(x, model="microscopy", binning=2, tile=40, dtype=np.float32,
                                  threads=2)
    np.testing.assert_allclose(tiled, whole, atol=1e-3)
    E = sys.modules["msrnet_napari.enhance"]  # the package attribute is the function
    monkeypatch.setattr(E, "BAND_TILES", 1)  # bands of one row of tiles: several bands
    assert len(E._bands(203, 97, 16, binning.halo(2, 11))) > 2
    banded = msrnet_napari.enhance(x, model="microscopy", binning=2, tile=16, dtype=np.float32,
                                   threads=1)
    np.testing.assert_allclose(banded, whole, atol=1e-3)
    lazy = msrnet_napari.enhance(da.from_array(x, chunks=(70, 50)), model="microscopy",
                                 binning=2, dtype=np.float32, threads=1).compute()
    np.testing.assert_allclose(lazy, whole, atol=1e-3)


def test_progress_counts_all_phases_and_cancel_stops():
    import threading

    x, _ = _poisson_scene(4, shape=(120, 120))
    seen = []
    msrnet_napari.enhance(x, model="microscopy", binning=2, tile=32, threads=1,
                          progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    stop = threading.Event()

    def cancel_early(done, _total):
        stop.set()

    with pytest.raises(msrnet_napari.Cancelled):
        msrnet_napari.enhance(x, model="microscopy", binning=2, tile=32, threads=1,
                              progress=cancel_early, cancel=stop)


def test_signal_noise_measures_the_noise_at_the_structures_not_their_shape():
    from msrnet_napari.linear_intensity import signal_noise

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:128, 0:128]
    smooth = 1000.0 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / (2 * 30.0**2))  # blurred cell
    assert signal_noise(smooth, 0.0, 1000.0) < 1.0  # a smooth structure is not noise
    noisy = smooth + rng.normal(0, 5.0, smooth.shape)
    assert signal_noise(noisy, 0.0, 1000.0) == pytest.approx(5.0, rel=0.1)
    # shot noise grows with the signal: 100x the photons, about 10x the noise
    many = signal_noise(rng.poisson(smooth).astype(float), 0.0, 1000.0)
    few = signal_noise(rng.poisson(smooth / 100).astype(float), 0.0, 10.0)
    assert 6 < many / few < 14
    assert np.isnan(signal_noise(np.zeros((16, 16)), 0.0, 1.0))  # nothing bright: undefined


def test_hot_pixels_neither_trigger_binning_nor_smear_into_their_neighbours():
    x, _ = _poisson_scene(3000, seed=8)  # bright, well exposed: no binning
    hot = x.copy()
    hot[20, 20] = hot[140, 130] = 65535
    d = msrnet_napari.scaling_for(hot, model="microscopy")
    assert d.linear.channels[0].binning == 1  # two hot pixels do not fake a low SNR
    starved, _ = _poisson_scene(4, seed=9)
    starved[20, 20] = 4095
    out = msrnet_napari.enhance(starved, model="microscopy", binning=2, dtype=np.float32,
                                threads=1)
    assert out[20, 20] == 4095  # passed through, as without binning
    ring = out[18:23, 18:23].copy()
    ring[2, 2] = np.nan
    background = float(np.median(out[:40, :40]))
    assert np.nanmax(np.abs(ring - background)) < 1.0  # not smeared over the 2x2 blocks


def test_fill_ceiling_uses_the_other_neighbours():
    u = np.full((5, 5, 3), 0.3, np.float32)
    u[2, 2] = 4.0
    u[2, 3] = 4.0
    filled = binning.fill_ceiling(u, 4.0)
    assert np.allclose(filled, 0.3)
    assert np.array_equal(binning.fill_ceiling(np.full((2, 2, 3), 4.0, np.float32), 4.0),
                          np.full((2, 2, 3), 4.0, np.float32))  # nothing else to take
