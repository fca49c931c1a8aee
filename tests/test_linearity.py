"""The flat-field linearity correction of the linear intensity model (linearity.py)."""

import numpy as np
import pytest

import msrnet_napari
from msrnet_napari.engine import Engine
from msrnet_napari.linearity import LEVELS, flat_response, measure_flat_response
from msrnet_napari.models import model_info
from msrnet_napari.weights import resolve_weights

pytest.importorskip("msrnet_napari._core")


@pytest.fixture(scope="module")
def microscopy_engine():
    return Engine(resolve_weights(model_info("microscopy").path), device="cpu")


def test_response_is_monotone_and_inverts(microscopy_engine):
    flat = measure_flat_response(microscopy_engine)
    assert flat.usable and flat.min_slope() > 0.7
    assert flat.response.shape == (3, LEVELS.size)
    assert np.all(np.diff(flat.response, axis=1) >= 0)
    # the bundled weights are measurably non-linear on flat fields (what is corrected)
    assert flat.max_deviation() > 1e-2
    # T^-1(T(u)) = u wherever the network is not flat (it is below u ~ 0.02: dead ReLUs
    # 0.6 scale below the dark level, where only noise goes)
    y = np.ascontiguousarray(flat.response.T[None].astype(np.float32))
    back = flat.invert(y)[0]
    live = LEVELS >= 0.05
    assert np.abs(back[live] - LEVELS[live, None]).max() < 1e-5
    # beyond the table: the end's offset, continuous at the ends
    ends = flat.invert(np.array([[[flat.response[0, 0] - 1, 0, 0],
                                  [flat.response[0, -1] + 1, 0, 0]]], np.float32))
    assert ends[0, 0, 0] == pytest.approx(LEVELS[0] - 1, abs=1e-5)
    assert ends[0, 1, 0] == pytest.approx(LEVELS[-1] + 1, abs=1e-5)


def test_networks_that_are_no_near_identity_are_left_uncorrected(monkeypatch):
    """Untrained weights fold the flat response: inverting it would merge intensities."""
    from msrnet_napari.config import MSRNetConfig

    from conftest import random_weights

    weights = random_weights(MSRNetConfig(depth=2, width=8, intensity="linear"))
    engine = Engine(weights, device="cpu")
    measured = measure_flat_response(engine)
    assert not measured.usable and measured.min_slope() < 0.5
    assert flat_response(engine) is None
    x = (100 + np.random.default_rng(0).poisson(20, (40, 40))).astype(np.uint16)
    a = msrnet_napari.enhance(x, weights=weights, dtype=np.float32)
    monkeypatch.setenv("MSRNET_FLAT_CORRECTION", "0")
    np.testing.assert_array_equal(a, msrnet_napari.enhance(x, weights=weights, dtype=np.float32))


def test_measured_once_per_engine(microscopy_engine):
    assert flat_response(microscopy_engine) is flat_response(microscopy_engine)
    wider = measure_flat_response(microscopy_engine, width=48)  # patch width does not matter
    np.testing.assert_allclose(wider.response, flat_response(microscopy_engine).response,
                               atol=1e-5)


def _flat_steps() -> tuple[np.ndarray, list[tuple[slice, slice, float]]]:
    """A noise-free float image: a dark level of 100 with wide flat squares at several
    levels, from just above the dark level to far above the reference level."""
    img = np.full((192, 320), 100.0, np.float32)
    squares = []
    for k, level in enumerate((103.0, 140.0, 400.0, 1000.0, 2500.0)):
        r, c = slice(16, 80) if k < 3 else slice(112, 176), slice(16 + 100 * (k % 3), 80 + 100 * (k % 3))
        img[r, c] = level
        squares.append((slice(r.start + 20, r.stop - 20), slice(c.start + 20, c.stop - 20), level))
    return img, squares


def _flat_errors(monkeypatch, correct: bool) -> list[float]:
    monkeypatch.setenv("MSRNET_FLAT_CORRECTION", "1" if correct else "0")
    img, squares = _flat_steps()
    out = msrnet_napari.enhance(img, model="microscopy", offset=100.0, binning=1)
    scale = msrnet_napari.scaling_for(img, model="microscopy", offset=100.0).linear.channels[0].scale
    errors = [abs(float(out[r, c].mean()) - level) / scale for r, c, level in squares]
    errors.append(abs(float(np.median(out[90:100, :])) - 100.0) / scale)  # the background
    return errors


def test_flat_regions_restored_at_their_level(monkeypatch):
    corrected = _flat_errors(monkeypatch, True)
    raw = _flat_errors(monkeypatch, False)  # the network alone: what the correction removes
    assert max(corrected) < 3e-4, corrected  # the interpolation between LEVELS (linearity.py)
    assert max(raw) > 5e-4, raw
    assert sum(corrected) < 0.25 * sum(raw), (corrected, raw)


def _hdr_scene(bright: float, seed: int = 1):
    """Poisson counts: offset 100, sky 20, two very bright and two faint blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:192, :192]
    sig = np.zeros((192, 192))
    for cy, cx, a in ((48, 140, bright), (140, 140, bright), (140, 48, 300), (48, 48, 100)):
        sig += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0 ** 2))
    counts = rng.poisson(sig + 20) + 100 + rng.normal(0, 2, sig.shape)
    return np.clip(counts, 0, 65535).astype(np.uint16), sig < 0.5


def test_hdr_background_stays_at_its_level(monkeypatch):
    """A 16-bit field whose 99.9th percentile is a 60,000-count object: the background
    (120 counts, noise ~4.9) must come back at its level, not lifted by the network's
    flat-field offset times the huge scale."""
    x, background = _hdr_scene(60000.0)
    noise = float(np.std(x[background]))
    out = msrnet_napari.enhance(x, model="microscopy", dtype=np.float32)
    bias = float(np.median(out[background])) - float(np.median(x[background]))
    assert abs(bias) < 0.2 * noise, (bias, noise)
    monkeypatch.setenv("MSRNET_FLAT_CORRECTION", "0")
    raw = msrnet_napari.enhance(x, model="microscopy", dtype=np.float32)
    raw_bias = float(np.median(raw[background])) - float(np.median(x[background]))
    assert raw_bias > 2 * noise, (raw_bias, noise)


def test_photo_path_is_not_corrected(monkeypatch):
    rng = np.random.default_rng(0)
    photo = (rng.random((48, 48, 3)) * 60).astype(np.uint8)
    a = msrnet_napari.enhance(photo, model="photo")
    monkeypatch.setenv("MSRNET_FLAT_CORRECTION", "0")
    np.testing.assert_array_equal(a, msrnet_napari.enhance(photo, model="photo"))


def test_dask_blocks_equal_eager():
    da = pytest.importorskip("dask.array")
    x, _ = _hdr_scene(30000.0, seed=3)
    eager = msrnet_napari.enhance(x, model="microscopy", dtype=np.float32)
    lazy = msrnet_napari.enhance(da.from_array(x, chunks=(96, 96)), model="microscopy",
                                 dtype=np.float32)
    # every block corrects with the same table; tiles differ only in float rounding
    # (scale ~27,000 counts: 1e-6 of it)
    np.testing.assert_allclose(np.asarray(lazy), eager, atol=0.05)
