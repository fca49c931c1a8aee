import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("scipy")

from msrnet_napari.training import baselines  # noqa: E402
from msrnet_napari.training.metrics import psnr, ssim  # noqa: E402


def _dark(shape=(48, 64, 3)):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = (np.sin(xx / 5.0) * np.cos(yy / 7.0) + 1) / 2
    img = np.stack([base, base ** 1.5, 1 - base], axis=-1) * 0.15
    return np.clip(img + rng.normal(0, 0.005, img.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("name", list(baselines.BASELINES))
def test_baseline_shape_range_brightens(name):
    dark = _dark()
    out = baselines.BASELINES[name](dark)
    assert out.shape == dark.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    if name != "identity":
        assert out.mean() > dark.mean() + 0.05


@pytest.mark.parametrize("name", list(baselines.BASELINES))
def test_baseline_uint8_and_gray(name):
    u8 = (_dark() * 255).astype(np.uint8)
    assert baselines.BASELINES[name](u8).shape == u8.shape
    gray = _dark()[..., 0]
    out = baselines.BASELINES[name](gray)
    assert out.shape == gray.shape and np.isfinite(out).all()


@pytest.mark.parametrize("value", [0.0, 0.2, 1.0])
def test_msrcr_constant_image_no_nan(value):
    out = baselines.msrcr(np.full((40, 50, 3), value, np.float32))
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_msrcr_large_sigma_image():
    img = np.random.default_rng(1).random((300, 520, 3)).astype(np.float32) * 0.2
    out = baselines.msrcr(img)
    assert out.shape == img.shape and np.isfinite(out).all()


def test_metrics():
    a = _dark()
    assert psnr(a, a) == float("inf")
    assert ssim(a, a) == pytest.approx(1.0)
    b = np.clip(a + 0.01, 0, 1)
    assert 30 < psnr(a, b) < 45
    assert psnr((a * 255).astype(np.uint8), (a * 255).astype(np.uint8)) == float("inf")
