"""The public enhance(): dtypes, layouts, normalisation, progress, cancel, dask; no torch
needed (weights from ``conftest.random_weights``; enhance() against the PyTorch
reference is in tests/test_parity.py)."""

import threading

import numpy as np
import pytest

import msrnet_napari
from msrnet_napari import enhance, exposure_gain_for
from msrnet_napari.config import MSRNetConfig
from msrnet_napari.engine import Engine
from msrnet_napari.exposure import apply_exposure_gain, linear_to_srgb, srgb_to_linear

from conftest import (
    check_gray_is_replicated_rgb,
    check_uint8_rgb_is_network,
    random_weights,
    rng_image,
)

CONFIG = MSRNetConfig(depth=3, width=8)


@pytest.fixture(scope="module")
def ckpt():
    """A random Checkpoint (no file: enhance() takes weights=Checkpoint as it takes a path)."""
    return random_weights(CONFIG, seed=4)


@pytest.fixture(scope="module")
def network(ckpt):
    """The raw network (the compiled engine) on the same weights: [0,1] HxWx3 -> raw HxWx3."""
    engine = Engine(ckpt, device="cpu")
    return lambda unit_hwc: engine.run(np.ascontiguousarray(unit_hwc, np.float32))


def test_uint8_rgb_is_the_network_on_unit_values(ckpt, network):
    out = check_uint8_rgb_is_network(ckpt, network)
    assert 0 < out.mean() < 255 and len(np.unique(out)) > 10  # not all clipped


def test_gray_runs_as_replicated_rgb_and_averaged(ckpt, network):
    check_gray_is_replicated_rgb(ckpt, network, atol=1e-5)


def test_12bit_uint16_is_scaled_by_detected_depth(ckpt):
    img = rng_image((16, 16, 3), np.uint16, high=4000)
    out = enhance(img, weights=ckpt)
    assert out.dtype == np.uint16 and out.max() <= 4095
    np.testing.assert_array_equal(out, enhance(img, weights=ckpt, bit_depth=12))
    as_float = enhance(img.astype(np.float32) / 4095, weights=ckpt)
    assert np.abs(out.astype(float) - np.rint(as_float * 4095)).max() <= 1
    # treating the same numbers as 16-bit data is a different (darker) input
    assert not np.array_equal(out, enhance(img, weights=ckpt, bit_depth=16))


def test_float_outside_unit_range_needs_intensity_range(ckpt):
    img = rng_image((9, 9), np.float32, high=1000.0)
    with pytest.raises(ValueError, match="intensity_range"):
        enhance(img, weights=ckpt)
    out = enhance(img, weights=ckpt, intensity_range=(0.0, 1000.0))
    np.testing.assert_allclose(out / 1000.0, enhance(img / 1000.0, weights=ckpt), atol=1e-5)


def test_stack_is_enhanced_per_plane(ckpt):
    stack = rng_image((3, 2, 11, 13), np.uint16, high=65535)
    out = enhance(stack, weights=ckpt, bit_depth=16)
    assert out.shape == stack.shape and out.dtype == np.uint16
    for idx in np.ndindex(3, 2):
        np.testing.assert_array_equal(out[idx], enhance(stack[idx], weights=ckpt, bit_depth=16))


def test_rgba_alpha_unchanged_and_channel_axis(ckpt):
    rgba = rng_image((10, 12, 4), np.uint8)
    out = enhance(rgba, weights=ckpt)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(out[..., :3], enhance(rgba[..., :3], weights=ckpt))
    multi = rng_image((2, 10, 12), np.uint8)  # 2 fluorescence channels, channel-first
    out = enhance(multi, weights=ckpt, channel_axis=0)
    for c in range(2):
        np.testing.assert_array_equal(out[c], enhance(multi[c], weights=ckpt))


def test_float_output_dtype_for_integer_input(ckpt):
    img = rng_image((8, 8, 3), np.uint8)
    out = enhance(img, weights=ckpt, dtype=np.float32)
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert np.abs(out * 255 - enhance(img, weights=ckpt)).max() <= 0.5 + 1e-3


@pytest.mark.parametrize(
    "bad, kwargs, match",
    [(np.array([[np.nan, 0.5]], np.float32), {}, "NaN"),
     (np.array([[np.inf, 0.5]], np.float32), {}, "infinite"),
     (np.zeros((0, 4), np.uint8), {}, "empty"),
     (np.zeros(16, np.uint8), {}, "at least 2"),
     (np.zeros((4, 4), object), {}, "unsupported dtype"),
     (np.zeros((4, 4), bool), {}, "unsupported dtype"),
     (np.zeros((4, 4, 5), np.uint8), {"rgb": True}, "RGB"),
     (np.full((4, 4), -3, np.int16), {}, "negative")],
)
def test_bad_input_raises_clear_value_error(ckpt, bad, kwargs, match):
    with pytest.raises(ValueError, match=match):
        enhance(bad, weights=ckpt, **kwargs)


def test_progress_covers_whole_job_and_cancel_stops(ckpt):
    stack = rng_image((3, 64, 64), np.uint8)
    calls = []
    enhance(stack, weights=ckpt, tile=32, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (12, 12) and len(calls) == 12
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        cancel.set()

    with pytest.raises(msrnet_napari.Cancelled):
        enhance(stack, weights=ckpt, tile=32, progress=progress, cancel=cancel)
    assert len(seen) < 12


def test_tile_zero_means_whole_plane_and_bad_tile_rejected(ckpt):
    img = rng_image((40, 50, 3), np.float32)
    calls = []
    whole = enhance(img, weights=ckpt, tile=0, progress=lambda d, t: calls.append(t))
    assert calls == [1]
    np.testing.assert_allclose(whole, enhance(img, weights=ckpt, tile=16), atol=1e-5)
    with pytest.raises(ValueError, match="tile"):
        enhance(img, weights=ckpt, tile=-4)


def test_no_exposure_gain_without_exposure_normalisation(ckpt):
    assert exposure_gain_for(rng_image((8, 8), np.float32) * 0.01, weights=ckpt) == 1.0


def test_checkpoint_object_and_path_agree(tmp_path):
    pytest.importorskip("torch")  # to write the checkpoint file
    from msrnet_napari.checkpoint import load_checkpoint
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    path = save_checkpoint(init_weights(MSRNet(CONFIG), seed=3), tmp_path / "small.pt")
    img = rng_image((8, 9, 3), np.uint8)
    np.testing.assert_array_equal(enhance(img, weights=load_checkpoint(path)),
                                  enhance(img, weights=str(path)))
    np.testing.assert_array_equal(enhance(img, weights=path), enhance(img, weights=str(path)))


# ------------------------------------------------------------------ dask

da = pytest.importorskip("dask.array")


def test_dask_is_lazy_and_equals_eager(ckpt):
    img = rng_image((2, 70, 90, 3), np.float32)
    lazy_in = da.from_array(img, chunks=(1, 32, 40, 3))
    out = enhance(lazy_in, weights=ckpt)
    assert isinstance(out, da.Array) and out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.compute(), enhance(img, weights=ckpt), atol=1e-5)


def test_dask_uint16_uses_global_bit_depth(ckpt):
    img = rng_image((64, 64), np.uint16, high=4095)
    img[:32, :32] //= 64  # a dark block whose own maximum would look like 8-bit data
    out = enhance(da.from_array(img, chunks=32), weights=ckpt).compute()
    np.testing.assert_array_equal(out, enhance(img, weights=ckpt))


def test_dask_nan_block_raises_on_compute(ckpt):
    img = rng_image((40, 40), np.float32)
    img[35, 35] = np.nan
    # the whole-array decision (one pass for the range) finds it before any block runs
    with pytest.raises(ValueError, match="NaN"):
        enhance(da.from_array(img, chunks=20), weights=ckpt).compute()


def test_dask_distributed_local_cluster(ckpt):
    distributed = pytest.importorskip("distributed")
    img = rng_image((96, 80, 3), np.uint8)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        lazy = enhance(da.from_array(img, chunks=(48, 40, 3)), weights=ckpt)
        result = client.compute(lazy).result()
    assert np.abs(result.astype(int) - enhance(img, weights=ckpt)).max() <= 1


# ------------------------------------------------------------------ exposure normalisation

@pytest.fixture(scope="module", params=["display", "linear"])
def exposure_ckpt(request):
    config = MSRNetConfig(depth=2, width=8, exposure_target=0.4 if request.param == "display" else 0.2,
                          exposure_space=request.param)
    return random_weights(config, seed=4)


def _brighter(img: np.ndarray, factor: float, space: str) -> np.ndarray:
    """The same scene, exposed ``factor`` times longer (in the model's exposure space)."""
    if space == "display":
        return img * np.float32(factor)
    return linear_to_srgb(srgb_to_linear(img) * factor)


def _space_mean(img: np.ndarray, space: str) -> float:
    return float((srgb_to_linear(img) if space == "linear" else img).mean(dtype=np.float64))


def test_exposure_normalised_model_is_the_network_on_the_re_exposed_input(exposure_ckpt):
    space, target = exposure_ckpt.config.exposure_space, exposure_ckpt.config.exposure_target
    img = rng_image((20, 24, 3), np.float32) * 0.1  # dark: gain > 1
    out = enhance(img, weights=exposure_ckpt)
    gain = target / _space_mean(img, space)
    engine = Engine(exposure_ckpt, device="cpu")
    expected = np.clip(engine.run(apply_exposure_gain(img.copy(), gain, space)), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert exposure_gain_for(img, weights=exposure_ckpt) == pytest.approx(gain, rel=1e-5)
    assert gain > 2
    # a brighter exposure of the same scene gets a smaller gain: same network input
    np.testing.assert_allclose(enhance(_brighter(img, 2.0, space), weights=exposure_ckpt), out,
                               atol=1e-4)
    # and gain 1 is not the automatic gain: the result differs
    assert np.abs(enhance(img, weights=exposure_ckpt, exposure_gain=1.0) - out).max() > 1e-2


def test_exposure_gain_is_shared_by_all_planes_and_dask(exposure_ckpt):
    space = exposure_ckpt.config.exposure_space
    stack = rng_image((3, 16, 16), np.float32) * np.array([0.05, 0.1, 0.2], np.float32)[:, None, None]
    out = enhance(stack, weights=exposure_ckpt)
    gain = exposure_ckpt.config.exposure_gain(_space_mean(stack, space))
    assert exposure_gain_for(stack, weights=exposure_ckpt) == pytest.approx(gain, rel=1e-6)
    for z in range(3):
        np.testing.assert_allclose(out[z], enhance(stack[z], weights=exposure_ckpt, exposure_gain=gain),
                                   atol=1e-6)
    lazy = enhance(da.from_array(stack, chunks=(1, 16, 8)), weights=exposure_ckpt)
    np.testing.assert_allclose(lazy.compute(), out, atol=1e-5)
    with pytest.raises(ValueError, match="exposure_gain"):
        enhance(stack, weights=exposure_ckpt, exposure_gain=-1)


def test_bands_cover_each_row_once_with_halo():
    from msrnet_napari.enhance import _bands

    for height, width, tile, halo in [(5000, 100, 256, 11), (100, 7, 1, 11), (2048, 64, 256, 11),
                                      (3000, 9000, 64, 3), (8192, 8192, 256, 11)]:
        bands = _bands(height, width, tile, halo)
        assert bands[0][2] == 0 and bands[-1][3] == height
        for (in0, in1, out0, out1), nxt in zip(bands, bands[1:] + [None]):
            assert in0 <= out0 < out1 <= in1
            assert out0 == 0 or out0 - in0 >= halo  # context above kept rows
            assert out1 == height or in1 - out1 >= halo  # context below
            if nxt is not None:
                assert nxt[2] == out1


def test_banded_plane_equals_single_tile(ckpt, monkeypatch):
    import sys

    E = sys.modules["msrnet_napari.enhance"]  # the package attribute is the function
    img = rng_image((150, 40, 3), np.float32)
    whole = enhance(img, weights=ckpt, tile=0)
    monkeypatch.setattr(E, "BAND_TILES", 1)  # bands of 16+ rows: many bands
    calls = []
    banded = enhance(img, weights=ckpt, tile=16, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_allclose(banded, whole, atol=1e-5)
    assert calls[-1][0] == calls[-1][1] and len({t for _, t in calls}) == 1
