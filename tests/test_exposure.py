"""Exposure normalisation (msrnet_napari.exposure, MSRNetConfig exposure keys); no torch needed."""

import numpy as np
import pytest

from msrnet_napari.config import MAX_EXPOSURE_GAIN, MAX_LINEAR_EXPOSURE_GAIN, MSRNetConfig
from msrnet_napari.exposure import (apply_exposure_gain, exposure_statistic, linear_to_srgb,
                                    srgb_to_linear)


def photo(seed=0, shape=(40, 50, 3)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def test_srgb_curves_invert_each_other_and_hit_known_points():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=2e-6)
    # IEC 61966-2-1: sRGB 0.5 is 21.4 % linear light; the toe is linear
    assert float(srgb_to_linear(np.float32(0.5))) == pytest.approx(0.21404, abs=1e-4)
    assert float(srgb_to_linear(np.float32(0.02))) == pytest.approx(0.02 / 12.92, rel=1e-5)


@pytest.mark.parametrize("exposure", [0.3, 0.05, 0.02])
def test_linear_gain_undoes_a_shorter_exposure(exposure):
    img = photo(1)
    dark = linear_to_srgb(srgb_to_linear(img) * exposure)  # a camera exposed `exposure` times as long
    restored = apply_exposure_gain(dark.copy(), 1 / exposure, "linear")
    np.testing.assert_allclose(restored, img, atol=2e-5)
    # the display-space gain with the same mean ratio does not (the sRGB curve is not a power law)
    display_gain = img.mean() / dark.mean()
    assert np.abs(apply_exposure_gain(dark.copy(), display_gain, "display") - img).max() > 0.02


def test_linear_gain_clips_at_white_and_gain_one_is_identity():
    img = photo(2)
    np.testing.assert_allclose(apply_exposure_gain(img.copy(), 1.0, "linear"), img, atol=2e-6)
    out = apply_exposure_gain(img.copy(), 100.0, "linear")
    assert out.max() <= 1.0 and out.min() >= 0.0
    assert (out > 0.999).mean() > 0.9


def test_display_gain_multiplies_in_place():
    img = photo(3)
    expected = img * 3
    out = apply_exposure_gain(img, 3.0, "display")
    assert out is img
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_statistic_is_a_sum_and_count_in_the_right_space():
    img = photo(4)
    total, count = exposure_statistic(img, "display")
    assert count == img.size and total == pytest.approx(float(img.sum(dtype=np.float64)), rel=1e-9)
    total, count = exposure_statistic(img, "linear")
    assert total / count == pytest.approx(float(srgb_to_linear(img).mean(dtype=np.float64)), rel=1e-6)
    assert total / count < img.mean()  # linear light is darker than its sRGB encoding


def test_unknown_space_is_rejected():
    with pytest.raises(ValueError, match="exposure_space"):
        apply_exposure_gain(photo(), 2.0, "log")
    with pytest.raises(ValueError, match="exposure_space"):
        exposure_statistic(photo(), "gamma")
    with pytest.raises(ValueError, match="exposure_space"):
        MSRNetConfig(exposure_target=0.2, exposure_space="Linear")


def test_config_gain_rule_per_space():
    display = MSRNetConfig(exposure_target=0.4)
    linear = MSRNetConfig(exposure_target=0.2, exposure_space="linear")
    assert display.exposure_space == "display"  # the default, as in checkpoints made before it
    assert display.exposure_gain(0.1) == pytest.approx(4.0)
    assert linear.exposure_gain(0.01) == pytest.approx(20.0)
    assert display.exposure_gain(0.9) == linear.exposure_gain(0.9) == 1.0  # never darkens
    assert display.exposure_gain(0.0) == MAX_EXPOSURE_GAIN
    assert linear.exposure_gain(0.0) == MAX_LINEAR_EXPOSURE_GAIN
    assert MSRNetConfig().exposure_gain(0.01) == 1.0  # normalisation off


def test_config_round_trip_and_engine_dict():
    config = MSRNetConfig(depth=3, width=8, exposure_target=0.215, exposure_space="linear")
    assert MSRNetConfig.from_dict(config.to_dict()) == config
    engine = config.engine_dict()
    assert "exposure_target" not in engine and "exposure_space" not in engine
    assert engine["depth"] == 3 and engine["width"] == 8
    # older checkpoints have no exposure_space key: display space
    old = {k: v for k, v in config.to_dict().items() if k != "exposure_space"}
    assert MSRNetConfig.from_dict(old).exposure_space == "display"


def test_only_the_training_package_imports_torch():
    """The torch boundary is a folder: msrnet_napari/training/. exposure.py handles torch
    tensors (for the reference model) through their own methods, never by importing torch."""
    import pkgutil
    import re
    import subprocess
    import sys
    from pathlib import Path

    import msrnet_napari

    package = Path(msrnet_napari.__file__).parent
    pattern = re.compile(r"^\s*(import torch\b|from torch\b)", re.M)
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if p.relative_to(package).parts[0] != "training" and pattern.search(p.read_text())]
    assert offenders == []
    modules = sorted(f"msrnet_napari.{m.name}" for m in pkgutil.iter_modules([str(package)])
                     if m.name not in ("training", "_widget"))  # _widget: Qt, tested elsewhere
    assert "msrnet_napari.enhance" in modules and "msrnet_napari.exposure" in modules
    code = (f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
