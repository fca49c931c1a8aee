import numpy as np
import pytest

from msrnet_napari.training import degrade


def _image(seed=0, shape=(40, 48, 3)):
    rng = np.random.default_rng(seed)
    base = rng.random(shape).astype(np.float32)
    return (0.3 + 0.7 * base).astype(np.float32)  # bright-ish


@pytest.mark.parametrize("mode", ["mixed", "sensor", "gamma"])
def test_synthesize_deterministic_range_quantised_darker(mode):
    img = _image()
    a = degrade.synthesize(img, np.random.default_rng(5), mode=mode)
    b = degrade.synthesize(img, np.random.default_rng(5), mode=mode)
    c = degrade.synthesize(img, np.random.default_rng(6), mode=mode)
    assert a.dtype == np.float32 and a.shape == img.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(a * 255, np.round(a * 255), atol=1e-3)  # 8-bit levels
    assert a.mean() < img.mean()


def test_synthesize_batch_and_uint8_darker_on_average():
    rng = np.random.default_rng(0)
    batch = (_image(1, (16, 24, 24, 3)) * 255).astype(np.uint8)
    out = degrade.synthesize(batch, rng)
    assert out.shape == batch.shape and out.dtype == np.float32
    per_image = out.reshape(16, -1).mean(1) < (batch.reshape(16, -1) / 255.0).mean(1)
    assert per_image.all()


def test_torch_version_matches_semantics():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_image(2, (8, 3, 20, 20)))
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    a = degrade.synthesize_torch(x, g1)
    b = degrade.synthesize_torch(x, g2)
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a * 255, (a * 255).round(), atol=1e-3)
    assert (a.mean(dim=(1, 2, 3)) < x.mean(dim=(1, 2, 3))).all()
    # noise-free sensor path agrees between numpy and torch
    e = np.float32(0.1)
    n = degrade._sensor(x.numpy(), e, np.float32(0), np.float32(0), None, 8)
    t = degrade._sensor(x, float(e), 0.0, 0.0, None, 8).numpy()
    assert np.abs(n - t).max() <= 1 / 255 + 1e-6


def test_srgb_roundtrip():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(degrade.linear_to_srgb(degrade.srgb_to_linear(x)), x, atol=1e-5)


def test_srgb_curves_are_the_ones_of_exposure():
    """One definition of the sRGB curves: degrade re-exports exposure's, never a copy."""
    from msrnet_napari import exposure

    assert degrade.srgb_to_linear is exposure.srgb_to_linear
    assert degrade.linear_to_srgb is exposure.linear_to_srgb


def test_to_float_is_the_training_convention():
    """uint16 is always /65535 here (training data), unlike enhance()'s bit-depth rule."""
    twelve_bit = np.array([[0, 4095, 65535]], np.uint16)
    np.testing.assert_allclose(degrade.to_float(twelve_bit), [[0, 4095 / 65535, 1]], rtol=1e-6)
    np.testing.assert_allclose(degrade.to_float(np.array([0, 255], np.uint8)), [0, 1])
    np.testing.assert_array_equal(degrade.to_float(np.array([-0.5, 0.25, 2.0], np.float32)),
                                  np.array([0, 0.25, 1], np.float32))
    assert degrade.to_float(np.array([True, False])).dtype == np.float32


def test_darken_levels_deterministic_monotonic_and_dtype():
    img = _image(3)
    means = []
    for level in sorted(degrade.DARKEN_LEVELS):
        d1 = degrade.darken(img, level)
        d2 = degrade.darken(img, level)
        np.testing.assert_array_equal(d1, d2)
        assert d1.dtype == np.float32 and d1.shape == img.shape
        assert 0 <= d1.min() and d1.max() <= 1
        means.append(d1.mean())
    assert means[0] < img.mean()
    assert all(a > b for a, b in zip(means, means[1:]))
    u8 = (img * 255).astype(np.uint8)
    d = degrade.darken(u8, 2)
    assert d.dtype == np.uint8 and d.shape == u8.shape
    with pytest.raises(ValueError):
        degrade.darken(img, 0)
