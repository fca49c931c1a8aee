"""The compiled CPU engine against the PyTorch reference, plus its Python API."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from msrnet_napari import _core
from msrnet_napari.checkpoint import Checkpoint
from msrnet_napari.config import MSRNetConfig, parameter_shapes
from msrnet_napari.engine import Cancelled, Engine, cuda_available

from conftest import make_model, numpy_weights, torch_forward

pytest.importorskip("torch")

TOL = 1e-4
SMALL = MSRNetConfig(log_bases=(1.0, 50.0), depth=3, width=8, f1_width=5)


def rand_image(h, w, seed=0, scale=1.0):
    return (np.random.default_rng(seed).random((h, w, 3), dtype=np.float32) * scale)


def core_engine(model):
    return _core.Engine(model.config.engine_dict(), numpy_weights(model))


def checkpoint_of(model):
    return Checkpoint(config=model.config, weights=numpy_weights(model), metadata={},
                      source="<test>")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (1, 2), (7, 13), (257, 511)])
def test_parity_default_config(seed, shape):
    model = make_model(None, seed)
    if shape == (257, 511) and seed != 0:
        pytest.skip("one large image per config is enough")
    img = rand_image(*shape, seed=seed)
    out = core_engine(model).run(img)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, torch_forward(model, img), atol=TOL, rtol=0)


@pytest.mark.parametrize("config", [
    SMALL,
    MSRNetConfig(depth=1, width=5, f1_width=1, log_bases=(3.0,)),
    MSRNetConfig(depth=2, width=12, f1_width=3),           # width not a multiple of 8
    MSRNetConfig(depth=4, width=40, f1_width=6),           # 5 channel blocks
])
@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (7, 13), (66, 131)])
def test_parity_other_configs(config, shape):
    model = make_model(config, seed=3)
    img = rand_image(*shape, seed=4)
    np.testing.assert_allclose(core_engine(model).run(img, tile=32),
                               torch_forward(model, img), atol=TOL, rtol=0)


def test_parity_out_of_range_input():
    """Values above 1 and tiny negatives (log1p fallback lanes) still match."""
    model = make_model(SMALL, seed=5)
    img = rand_image(9, 17, seed=6, scale=3.0) - 0.001
    np.testing.assert_allclose(core_engine(model).run(img),
                               torch_forward(model, img), atol=TOL, rtol=0)


def test_threads_identical():
    model = make_model(None, seed=0)
    eng = core_engine(model)
    img = rand_image(70, 90)
    a = eng.run(img, tile=32, threads=1)
    b = eng.run(img, tile=32, threads=2)
    np.testing.assert_array_equal(a, b)


def test_exposure_target_key_accepted():
    """The engine ignores exposure_target (enhance() applies that gain itself)."""
    model = make_model(SMALL, seed=2)
    img = rand_image(6, 7)
    cfg = dict(SMALL.engine_dict(), exposure_target=0.4)
    out = _core.Engine(cfg, numpy_weights(model)).run(img)
    np.testing.assert_array_equal(out, core_engine(model).run(img))


def test_module_attributes():
    assert _core.simd_level() in ("avx512", "avx2", "generic")
    assert isinstance(_core.has_cuda, bool)
    assert _core.cuda_device_count() >= 0
    assert issubclass(_core.Cancelled, Exception)
    assert core_engine(make_model(SMALL)).receptive_radius == 1 + SMALL.depth


# ------------------------------------------------------------------ bad inputs
@pytest.fixture(scope="module")
def small_engine():
    return core_engine(make_model(SMALL, seed=0))


def test_rejects_wrong_dtype(small_engine):
    with pytest.raises(TypeError, match="float32"):
        small_engine.run(np.zeros((4, 4, 3), np.float64))
    with pytest.raises(TypeError, match="float32"):
        small_engine.run(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4), (4, 4, 1), (2, 4, 4, 3)])
def test_rejects_wrong_shape(small_engine, shape):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        small_engine.run(np.zeros(shape, np.float32))


def test_rejects_non_contiguous_in_core(small_engine):
    img = np.zeros((8, 8, 3), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        small_engine.run(img)


def test_rejects_bad_tile_and_threads(small_engine):
    img = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError):
        small_engine.run(img, tile=0)
    with pytest.raises(ValueError):
        small_engine.run(img, threads=-1)
    with pytest.raises(TypeError):
        small_engine.run(img, progress=42)


def test_empty_image(small_engine):
    assert small_engine.run(np.zeros((0, 5, 3), np.float32)).shape == (0, 5, 3)


def test_rejects_bad_weights():
    model = make_model(SMALL)
    cfg, w = SMALL.engine_dict(), numpy_weights(model)
    bad = dict(w, **{"f2.convs.1.weight": np.zeros((8, 8, 3, 2), np.float32)})
    with pytest.raises(ValueError, match=r"f2\.convs\.1\.weight.*\(8, 8, 3, 2\)"):
        _core.Engine(cfg, bad)
    missing = {k: v for k, v in w.items() if k != "f3.bias"}
    with pytest.raises(ValueError, match="missing weight 'f3.bias'"):
        _core.Engine(cfg, missing)
    with pytest.raises(ValueError, match="unexpected"):
        _core.Engine(cfg, dict(w, extra=np.zeros(1, np.float32)))
    with pytest.raises(ValueError, match="unknown MSR-net config key"):
        _core.Engine(dict(cfg, bogus=1), w)
    wrong_cfg = dict(cfg, depth=4)
    with pytest.raises(ValueError, match="missing weight 'f2.convs.3.weight'"):
        _core.Engine(wrong_cfg, w)
    assert set(w) == set(parameter_shapes(SMALL))


# ---------------------------------------------------- progress, GIL, cancel
def test_progress_called_per_tile(small_engine):
    calls = []
    img = rand_image(50, 70)
    out = small_engine.run(img, tile=16, progress=lambda d, t: calls.append((d, t)))
    total = 4 * 5
    assert calls == [(i, total) for i in range(1, total + 1)]
    np.testing.assert_array_equal(out, small_engine.run(img, tile=16))


def test_cancel(small_engine):
    calls = []

    def progress(done, total):
        calls.append(done)
        return done < 3

    with pytest.raises(Cancelled):
        small_engine.run(rand_image(64, 64), tile=16, progress=progress)
    assert calls == [1, 2, 3]
    assert Cancelled is _core.Cancelled


def test_progress_exception_propagates(small_engine):
    def progress(done, total):
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        small_engine.run(rand_image(40, 40), tile=16, progress=progress)
    # the engine is still usable afterwards
    assert small_engine.run(rand_image(5, 5)).shape == (5, 5, 3)


def test_gil_released_during_compute():
    eng = core_engine(make_model(None, seed=0))
    img = rand_image(512, 512)
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0.0005)

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.01)
        before = counter[0]
        eng.run(img, tile=1024, threads=1)  # one tile: no progress callbacks
        during = counter[0] - before
    finally:
        stop.set()
        t.join()
    assert during > 5


# ----------------------------------------------------------- engine.py wrapper
def test_engine_wrapper_cpu():
    model = make_model(SMALL, seed=1)
    eng = Engine(checkpoint_of(model), device="cpu")
    assert eng.device == "cpu"
    assert eng.receptive_radius == SMALL.receptive_radius
    img = rand_image(20, 30)
    np.testing.assert_allclose(eng.run(img, tile=8), torch_forward(model, img), atol=TOL, rtol=0)
    # non-contiguous input is copied by the wrapper
    big = rand_image(20, 60)
    view = big[:, ::2]
    np.testing.assert_allclose(eng.run(view), torch_forward(model, np.ascontiguousarray(view)),
                               atol=TOL, rtol=0)
    with pytest.raises(TypeError):
        eng.run(img.astype(np.float64))
    with pytest.raises(ValueError):
        eng.run(img[..., :2])


def test_engine_wrapper_devices():
    ckpt = checkpoint_of(make_model(SMALL))
    assert Engine(ckpt, device="auto").device == ("cuda" if cuda_available() else "cpu")
    with pytest.raises(ValueError):
        Engine(ckpt, device="tpu")
    if not cuda_available():
        with pytest.raises(RuntimeError, match="cuda"):
            Engine(ckpt, device="cuda")
