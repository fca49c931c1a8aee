"""Exposure normalisation (msrnet_napari.exposure, MSRNetConfig exposure keys); no torch needed."""

import numpy as np
import pytest

from msrnet_napari.config import MAX_EXPOSURE_GAIN, MAX_LINEAR_EXPOSURE_GAIN, MSRNetConfig
from msrnet_napari.exposure import (
    apply_exposure_gain,
    exposure_statistic,
    linear_to_srgb,
    srgb_to_linear,
)


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


# --------------------------------------------------------------------------- v2 rule (issue 11)

from msrnet_napari import exposure as E  # noqa: E402

V1 = MSRNetConfig(exposure_target=0.215, exposure_space="linear")
V2 = MSRNetConfig(exposure_target=0.215, exposure_space="linear", exposure_statistic="robust",
                  exposure_trim=0.02, max_gain_rule="quantisation", black_step=0.25)


def dark_scene(seed=0, shape=(60, 80, 3), level=0.08) -> np.ndarray:
    """A dim 8-bit scene as floats on the 8-bit grid."""
    x = np.random.default_rng(seed).uniform(0, level, shape)
    return (np.rint(x * 255) / 255).astype(np.float32)


def test_robust_statistic_is_the_winsorised_mean_for_8bit_data():
    img = dark_scene(1)
    img[:6, :8] = 1.0  # a lamp: 1 % of the pixels
    s = E.exposure_summary(img, "linear")
    v = srgb_to_linear(img).astype(np.float64).ravel()
    for trim in (0.005, 0.02, 0.1):
        k = trim * v.size
        srt = np.sort(v)
        clip = srt[v.size - int(np.ceil(k))]  # the value where the clipped part begins
        expected = np.minimum(v, clip).mean()
        got = float(E.summary_statistic(s.counts, s.sums, "robust", trim))
        assert got == pytest.approx(expected, rel=1e-6)
    assert float(E.summary_statistic(s.counts, s.sums, "mean")) == pytest.approx(v.mean(), rel=1e-9)
    assert float(E.summary_statistic(s.counts, s.sums, "robust", 0.0)) == pytest.approx(v.mean(),
                                                                                       rel=1e-9)


def test_a_bright_lamp_does_not_decide_the_gain():
    img = dark_scene(2)
    lamp = img.copy()
    lamp[:7, :7] = 1.0  # a saturated light source on 1 % of the image
    plain_v1, lamp_v1 = E.image_exposure_gain(V1, img), E.image_exposure_gain(V1, lamp)
    plain_v2, lamp_v2 = E.image_exposure_gain(V2, img), E.image_exposure_gain(V2, lamp)
    assert lamp_v1 < 0.5 * plain_v1  # the plain mean: the lamp more than halves the gain
    assert lamp_v2 == pytest.approx(plain_v2, rel=0.05)  # robust: within 5 %


def test_a_near_black_8bit_image_gets_a_bounded_gain():
    rng = np.random.default_rng(3)
    black = (rng.random((50, 60, 3)) < 0.03).astype(np.uint8)  # 0 or 1 code: no image there
    bound = float(srgb_to_linear(np.float32(0.25)) / srgb_to_linear(np.float32(1 / 255)))
    assert bound == pytest.approx(167.6, abs=0.1)
    assert E.image_exposure_gain(V1, black / np.float32(255)) == MAX_LINEAR_EXPOSURE_GAIN
    assert E.image_exposure_gain(V2, black / np.float32(255)) == pytest.approx(bound, rel=1e-6)
    # one code above black re-exposed by the bound reaches black_step, not white
    out = apply_exposure_gain(np.float32([1 / 255]), bound, "linear")
    assert float(out[0]) == pytest.approx(0.25, abs=1e-4)
    # 16-bit data have a 257 times finer step: the bound allows more (up to the fixed cap)
    assert E.max_exposure_gain(V2, 1 / 65535) == MAX_LINEAR_EXPOSURE_GAIN
    # floats off the 8-bit grid: unknown step, only noise_floor bounds the gain
    off_grid = black / np.float32(255) + np.float32(1e-4)
    assert E.image_exposure_gain(V2, off_grid) == MAX_LINEAR_EXPOSURE_GAIN
    floored = MSRNetConfig(**{**V2.to_dict(), "noise_floor": 1e-3})
    assert E.image_exposure_gain(floored, off_grid) == pytest.approx(
        float(srgb_to_linear(np.float32(0.25))) / 1e-3, rel=1e-5)
    # display space: black_step / step
    disp = MSRNetConfig(exposure_target=0.4, max_gain_rule="quantisation", black_step=0.2)
    assert E.max_exposure_gain(disp, 1 / 255) == pytest.approx(51.0)


def test_enhance_decides_the_v2_gain_for_uint8_float_and_dask_alike():
    import dataclasses

    from msrnet_napari import exposure_gain_for
    from msrnet_napari.weights import resolve_weights

    da = pytest.importorskip("dask.array")
    ckpt = dataclasses.replace(resolve_weights(None), config=V2)  # bundled weights, v2 rule
    img = dark_scene(4, (90, 70, 3))
    img[:5, :5] = 1.0
    u8 = np.rint(img * 255).astype(np.uint8)
    expected = E.image_exposure_gain(V2, img)
    assert exposure_gain_for(u8, weights=ckpt) == pytest.approx(expected, rel=1e-6)
    assert exposure_gain_for(img, weights=ckpt) == pytest.approx(expected, rel=1e-6)
    lazy = da.from_array(u8, chunks=(25, 30, 3))
    assert exposure_gain_for(lazy, weights=ckpt, bit_depth=8) == pytest.approx(expected, rel=1e-6)
    black = np.zeros((40, 40, 3), np.uint8)
    black[::7, ::5] = 1
    assert exposure_gain_for(black, weights=ckpt) == pytest.approx(E.max_exposure_gain(V2, 1 / 255))


def test_summaries_add_up_over_blocks():
    img = dark_scene(5, (64, 48, 3))
    whole = E.exposure_summary(img, "linear")
    parts = E.ExposureSummary.combine(E.exposure_summary(img[r:r + 10], "linear")
                                      for r in range(0, 64, 10))
    np.testing.assert_array_equal(parts.counts, whole.counts)
    np.testing.assert_allclose(parts.sums, whole.sums, rtol=1e-12)
    assert parts.count == img.size and parts.grid_error == whole.grid_error < E.GRID_TOLERANCE


def test_old_checkpoints_keep_todays_gain():
    old = {"log_bases": [1.0, 10.0, 100.0, 300.0], "depth": 10, "width": 32, "f1_width": 3,
           "exposure_target": 0.215, "exposure_space": "linear"}  # the bundled model's config
    config = MSRNetConfig.from_dict(old)
    assert (config.exposure_statistic, config.max_gain_rule) == ("mean", "fixed")
    assert config.to_dict() == {**old, "intensity": "photo"}  # no v2 keys written
    for img in (dark_scene(6), dark_scene(7, level=0.004), np.zeros((8, 8, 3), np.float32)):
        mean = float(srgb_to_linear(img).mean(dtype=np.float64))
        today = min(max(0.215 / max(mean, 1e-9), 1.0), MAX_LINEAR_EXPOSURE_GAIN)
        assert config.exposure_gain(mean) == pytest.approx(today, rel=1e-12)
        assert E.image_exposure_gain(config, img) == pytest.approx(today, rel=1e-6)


def test_v2_config_round_trip_and_validation():
    assert MSRNetConfig.from_dict(V2.to_dict()) == V2
    d = V2.to_dict()
    assert d["exposure_statistic"] == "robust" and d["max_gain_rule"] == "quantisation"
    assert "black_step" not in d and "noise_floor" not in d  # defaults are not written
    for bad in ({"exposure_statistic": "median"}, {"max_gain_rule": "noise"},
                {"exposure_trim": 0.7}, {"black_step": 0.0}, {"noise_floor": -1.0},
                {"exposure_trim": True}):
        with pytest.raises(ValueError):
            MSRNetConfig(**{**V2.to_dict(), **bad})


def test_torch_model_uses_the_same_rule():
    torch = pytest.importorskip("torch")
    from msrnet_napari.training.model import MSRNet

    imgs = [dark_scene(8), dark_scene(9, level=0.01), dark_scene(10, level=0.003)]
    imgs[0][:6, :6] = 1.0
    x = torch.from_numpy(np.stack([i.transpose(2, 0, 1) for i in imgs]))
    for config in (V1, V2, MSRNetConfig(**{**V2.to_dict(), "exposure_statistic": "mean"})):
        got = MSRNet(config).exposure_gain(x).flatten().tolist()
        expected = [E.image_exposure_gain(config, i) for i in imgs]
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    # an explicit step (the trainer passes 1/255 for its 8-bit synthetic data)
    got = MSRNet(V2).exposure_gain(x + 1e-4, quantisation_step=1 / 255).flatten().tolist()
    assert max(got) <= E.max_exposure_gain(V2, 1 / 255) + 1e-3
