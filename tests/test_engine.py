"""The compiled CPU engine and its Python API; no torch needed.

Weights come from ``conftest.random_weights``; the parity of the engine with the
PyTorch reference is in tests/test_parity.py.
"""

from __future__ import annotations

import ast
import importlib.metadata
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from msrnet_napari import _core
from msrnet_napari.config import (
    ARCHITECTURE_KEYS,
    MAX_DEPTH,
    MAX_F1_WIDTH,
    MAX_LOG_BASES,
    MAX_WIDTH,
    MSRNetConfig,
    parameter_shapes,
)
from msrnet_napari.engine import Cancelled, Engine, cuda_available

from conftest import random_weights

SMALL = MSRNetConfig(log_bases=(1.0, 50.0), depth=3, width=8, f1_width=5)
DEFAULT = MSRNetConfig()


def rand_image(h, w, seed=0, scale=1.0):
    return (np.random.default_rng(seed).random((h, w, 3), dtype=np.float32) * scale)


def core_engine(config, seed=0):
    return _core.Engine(config.engine_dict(), random_weights(config, seed).weights)


def test_output_shape_dtype_and_finite():
    for config in (DEFAULT, SMALL):
        for shape in ((1, 1), (2, 1), (1, 2), (7, 13)):
            out = core_engine(config).run(rand_image(*shape))
            assert out.shape == (*shape, 3) and out.dtype == np.float32 and np.isfinite(out).all()


def test_weights_and_input_matter():
    img = rand_image(12, 14)
    a, b = core_engine(SMALL, 0).run(img), core_engine(SMALL, 1).run(img)
    assert np.abs(a - b).max() > 1e-3
    assert np.abs(core_engine(SMALL, 0).run(rand_image(12, 14, seed=1)) - a).max() > 1e-3


def test_identity_weights_pass_the_input_through():
    """A network that is the identity (conftest.random_weights(identity=True)) returns its
    input: the engine applies every layer with the checkpoint's own weights."""
    ckpt = random_weights(identity=True)
    img = rand_image(9, 11, seed=2)
    out = _core.Engine(ckpt.config.engine_dict(), ckpt.weights).run(img)
    np.testing.assert_allclose(out, img, atol=2e-4)


def test_threads_identical():
    eng = core_engine(DEFAULT, 0)
    img = rand_image(70, 90)
    a = eng.run(img, tile=32, threads=1)
    b = eng.run(img, tile=32, threads=2)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape, tile", [((300, 517), 64), ((200, 200), 256), ((97, 1500), 128)])
def test_any_thread_count_is_bit_identical(shape, tile):
    """Threads take whole tiles, each computed the same way: 1, 2, 4 and 8 threads
    (more than this machine's cores, too) give the same bits."""
    eng = core_engine(DEFAULT, 3)
    img = rand_image(*shape, seed=4, scale=0.5)
    ref = eng.run(img, tile=tile, threads=1)
    for threads in (2, 4, 8, 0):
        np.testing.assert_array_equal(eng.run(img, tile=tile, threads=threads), ref)


@pytest.mark.parametrize("shape", [(1, 2000), (2000, 1), (1, 1), (3, 5), (2, 700)])
def test_thin_and_tiny_images_with_threads(shape):
    eng = core_engine(DEFAULT, 1)
    img = rand_image(*shape, seed=5)
    ref = eng.run(img, threads=1)
    assert np.isfinite(ref).all()
    for threads in (2, 4):
        np.testing.assert_array_equal(eng.run(img, threads=threads), ref)
    assert eng.plan(*shape, threads=4)[2] == 1  # too little work to wait for a second thread


def test_plan_rules():
    eng = core_engine(DEFAULT, 0)
    r = eng.receptive_radius
    tile, tiles, threads = eng.plan(2048, 2048, 256, 4)
    assert (tile, tiles, threads) == (256, 64, 4)  # plenty of tiles: every thread asked for
    assert eng.plan(2048, 2048, 256, 1)[2] == 1
    for h, w, t in [(512, 512, 1024), (200, 200, 256), (300, 300, 256), (64, 4096, 64)]:
        tile, tiles, threads = eng.plan(h, w, t, 2)
        assert 1 <= tile <= t  # cut smaller only, so memory stays bounded by the tile asked
        assert tiles == -(-h // tile) * -(-w // tile)
        assert 1 <= threads <= min(2, tiles)
        # the cut does not depend on the thread count (bit-identity)
        assert eng.plan(h, w, t, 1)[:2] == eng.plan(h, w, t, 8)[:2] == (tile, tiles)
    assert r == DEFAULT.receptive_radius
    # too little work for a second thread: the tile is not cut for nothing
    assert eng.plan(128, 128, 256, 2) == (256, 1, 1)
    assert eng.plan(0, 10)[1] == 0
    with pytest.raises(ValueError):
        eng.plan(10, 10, 0)


def test_default_tile_from_the_cache():
    eng = core_engine(DEFAULT, 0)
    assert 128 <= eng.default_tile <= 512 and eng.default_tile % 32 == 0
    img = rand_image(40, 50)
    np.testing.assert_array_equal(eng.run(img), eng.run(img, tile=eng.default_tile))
    assert Engine(random_weights(DEFAULT, 0), device="cpu").default_tile == eng.default_tile


def test_config_must_be_exactly_the_architecture():
    """The binding takes config.engine_dict() and nothing else: an unknown key (even
    one MSRNetConfig has, like exposure_target, which enhance() applies itself) or a
    missing one is refused; the C++ side has no defaults of its own."""
    weights = random_weights(SMALL, 2).weights
    for extra in ("exposure_target", "exposure_space", "intensity", "bogus"):
        with pytest.raises(ValueError, match=f"unknown MSR-net config key: {extra}"):
            _core.Engine(dict(SMALL.engine_dict(), **{extra: SMALL.to_dict().get(extra, 1)}),
                         weights)
    assert tuple(SMALL.engine_dict()) == ARCHITECTURE_KEYS
    for key in ARCHITECTURE_KEYS:
        cfg = {k: v for k, v in SMALL.engine_dict().items() if k != key}
        with pytest.raises(ValueError, match=f"missing MSR-net config key: {key}"):
            _core.Engine(cfg, weights)
        with pytest.raises(ValueError, match=f"missing MSR-net config key: {key}"):
            _core.parameter_shapes(cfg)


@pytest.mark.parametrize("key, value, limit", [
    ("depth", MAX_DEPTH + 1, "MAX_DEPTH"), ("width", MAX_WIDTH + 1, "MAX_WIDTH"),
    ("f1_width", MAX_F1_WIDTH + 1, "MAX_F1_WIDTH"), ("depth", 0, "MAX_DEPTH"),
    ("log_bases", [1.0] * (MAX_LOG_BASES + 1), "MAX_LOG_BASES"),
    ("log_bases", [], "MAX_LOG_BASES"),
])
def test_config_limits_are_pythons(key, value, limit):
    cfg = dict(SMALL.engine_dict(), **{key: value})
    with pytest.raises(ValueError, match=f"{key} must .*msrnet_napari.config.{limit}"):
        _core.parameter_shapes(cfg)


@pytest.mark.parametrize("bases", [[1.0, 0.0], [-1.0], [float("nan")], [float("inf")]])
def test_config_log_bases_positive_and_finite(bases):
    with pytest.raises(ValueError, match="log_bases must all be finite and > 0"):
        _core.parameter_shapes(dict(SMALL.engine_dict(), log_bases=bases))


@pytest.mark.parametrize("cfg", [
    SMALL, DEFAULT, MSRNetConfig(log_bases=(3.0,), depth=1, width=1, f1_width=1),
    MSRNetConfig(depth=MAX_DEPTH, width=7, f1_width=MAX_F1_WIDTH,
                 log_bases=tuple(range(1, MAX_LOG_BASES + 1))),
])
def test_cpp_layer_table_is_config_parameter_shapes(cfg):
    """The C++ layer table (msrnet/model.h) and config.parameter_shapes agree on
    every name, shape and the order."""
    got = _core.parameter_shapes(cfg.engine_dict())
    assert list(got.items()) == list(parameter_shapes(cfg).items())


def test_stub_types_the_compiled_module():
    """_core.pyi sits in the package (also in the installed wheel, with py.typed) and
    names exactly what the compiled module exports."""
    import msrnet_napari

    here = Path(msrnet_napari.__file__).parent
    stub = here / "_core.pyi"
    assert stub.is_file() and (here / "py.typed").is_file()
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    declared = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
    exported = {n for n in dir(_core) if not n.startswith("__")} | {"__version__"}
    if not _core.has_cuda:
        exported.add("CudaEngine")  # typed for builds with CUDA
    assert declared == exported


def test_version_from_one_place():
    import msrnet_napari

    assert _core.__version__ == msrnet_napari.__version__
    assert importlib.metadata.version("msrnet-napari") == msrnet_napari.__version__


def test_module_attributes():
    assert _core.simd_level() in ("avx512", "avx2", "generic")
    assert isinstance(_core.has_cuda, bool)
    count = _core.cuda_device_count()
    assert type(count) is int and count >= 0
    if not _core.has_cuda:
        assert count == 0  # a build without CUDA never reports a GPU
    assert cuda_available() is (_core.has_cuda and count > 0)
    assert hasattr(_core, "CudaEngine") is _core.has_cuda
    assert issubclass(_core.Cancelled, Exception)
    assert core_engine(SMALL).receptive_radius == 1 + SMALL.depth


# ------------------------------------------------------------------ bad inputs
@pytest.fixture(scope="module")
def small_engine():
    return core_engine(SMALL, seed=0)


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
    cfg, w = SMALL.engine_dict(), random_weights(SMALL).weights
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


def test_progress_with_threads_counts_every_tile_once_on_the_calling_thread():
    eng = core_engine(DEFAULT, 0)
    img = rand_image(160, 224)
    caller, calls, threads_seen = threading.get_ident(), [], set()

    def progress(done, total):
        calls.append((done, total))
        threads_seen.add(threading.get_ident())

    out = eng.run(img, tile=32, threads=2, progress=progress)
    total = eng.plan(160, 224, 32, 2)[1]
    assert total == 5 * 7
    assert calls == [(i, total) for i in range(1, total + 1)]  # once each, in order
    assert threads_seen == {caller}  # Python's per-thread re-entrancy guard relies on it
    np.testing.assert_array_equal(out, eng.run(img, tile=32, threads=1))


def test_cancel_with_threads_stops_starting_tiles():
    eng = core_engine(DEFAULT, 0)
    img = rand_image(512, 512)
    t0 = time.perf_counter()
    eng.run(img, tile=32, threads=2)
    full = time.perf_counter() - t0
    calls = []

    def progress(done, total):
        calls.append(done)
        return done < 3

    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        eng.run(img, tile=32, threads=2, progress=progress)
    cancelled = time.perf_counter() - t0
    assert calls == [1, 2, 3]  # no call after the one that cancelled
    assert cancelled < full / 4  # 256 tiles; at most one more per thread after the 3rd


def test_progress_exception_with_threads_surfaces_after_the_threads():
    eng = core_engine(DEFAULT, 0)
    img = rand_image(128, 128)
    calls = []

    def progress(done, total):
        calls.append(done)
        if done == 2:
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        eng.run(img, tile=16, threads=2, progress=progress)
    assert calls == [1, 2]
    np.testing.assert_array_equal(eng.run(img, tile=16, threads=2), eng.run(img, tile=16, threads=1))


def test_progress_exception_propagates(small_engine):
    def progress(done, total):
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        small_engine.run(rand_image(40, 40), tile=16, progress=progress)
    # the engine is still usable afterwards
    assert small_engine.run(rand_image(5, 5)).shape == (5, 5, 3)


def test_gil_released_during_compute():
    eng = core_engine(DEFAULT, seed=0)
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
    ckpt = random_weights(SMALL, seed=1)
    eng = Engine(ckpt, device="cpu")
    assert eng.device == "cpu" and eng.config == SMALL
    assert eng.receptive_radius == SMALL.receptive_radius
    core = _core.Engine(SMALL.engine_dict(), ckpt.weights)
    img = rand_image(20, 30)
    np.testing.assert_array_equal(eng.run(img, tile=8), core.run(img, tile=8))
    # non-contiguous input is copied by the wrapper
    big = rand_image(20, 60)
    view = big[:, ::2]
    np.testing.assert_array_equal(eng.run(view), core.run(np.ascontiguousarray(view)))
    with pytest.raises(TypeError):
        eng.run(img.astype(np.float64))
    with pytest.raises(ValueError):
        eng.run(img[..., :2])


def test_engine_wrapper_devices():
    ckpt = random_weights(SMALL)
    assert Engine(ckpt, device="auto").device == ("cuda" if cuda_available() else "cpu")
    with pytest.raises(ValueError):
        Engine(ckpt, device="tpu")
    if not cuda_available():
        with pytest.raises(RuntimeError, match="cuda"):
            Engine(ckpt, device="cuda")


def test_precision_is_a_cuda_setting_the_cpu_engine_computes_fp32():
    """precision="tf32" selects the CUDA tensor-core kernel; the CPU engine has none and
    must say so (and give exactly the fp32 result), not pretend."""
    ckpt = random_weights(SMALL)
    img = np.random.default_rng(3).random((40, 50, 3), dtype=np.float32)
    fp32, asked = Engine(ckpt, device="cpu"), Engine(ckpt, device="cpu", precision="tf32")
    assert fp32.precision == asked.precision == "fp32" and "fp32" in repr(asked)
    np.testing.assert_array_equal(asked.run(img, tile=32), fp32.run(img, tile=32))
    for bad in ("fp16", "TF32", None):
        with pytest.raises(ValueError, match="precision"):
            Engine(ckpt, device="cpu", precision=bad)
    import msrnet_napari

    x = (np.random.default_rng(4).random((30, 40)) * 4000).astype(np.uint16)
    np.testing.assert_array_equal(msrnet_napari.enhance(x, weights=ckpt, device="cpu",
                                                        precision="tf32"),
                                  msrnet_napari.enhance(x, weights=ckpt, device="cpu"))
    with pytest.raises(ValueError, match="precision"):
        msrnet_napari.enhance(x, weights=ckpt, precision="half")
