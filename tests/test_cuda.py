"""CUDA engine (_core.CudaEngine): parity with the CPU engine, tiling, progress/cancel.

Skipped unless the extension was built with CUDA *and* a GPU is usable.
Weights come from ``conftest.random_weights`` (no torch needed; only the parity
test against the torch reference needs torch).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from msrnet_napari.config import MSRNetConfig

from conftest import random_weights as conftest_random_weights

_core = pytest.importorskip("msrnet_napari._core")


def _gpu_count() -> int:
    if not getattr(_core, "has_cuda", False):
        return 0
    try:
        return int(_core.cuda_device_count())
    except Exception:  # broken driver: behave like no GPU
        return 0


HAS_GPU = _gpu_count() > 0 and hasattr(_core, "CudaEngine")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_GPU, reason="msrnet_napari._core built without CUDA or no CUDA GPU"),
]

TOL = 1e-3


def random_weights(config: MSRNetConfig, seed: int = 0) -> dict[str, np.ndarray]:
    return conftest_random_weights(config, seed).weights


def random_image(h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def default_model():
    config = MSRNetConfig()
    weights = random_weights(config, seed=0)
    return config, weights


@pytest.fixture(scope="module")
def engines(default_model):
    config, weights = default_model
    cfg = config.engine_dict()
    return _core.Engine(cfg, weights), _core.CudaEngine(cfg, weights)


def test_device_count_positive():
    assert _core.cuda_device_count() >= 1


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (257, 511)])
def test_parity_with_cpu_engine(engines, shape):
    cpu, gpu = engines
    image = random_image(*shape, seed=sum(shape))
    ref = cpu.run(image, tile=256)
    out = gpu.run(image, tile=256)
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL)


def test_parity_with_torch(default_model):
    torch = pytest.importorskip("torch")
    from msrnet_napari.training.model import MSRNet

    config, weights = default_model
    model = MSRNet(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    image = random_image(45, 77, seed=3)
    with torch.inference_mode():
        ref = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    out = _core.CudaEngine(config.engine_dict(), weights).run(image, tile=32)
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL)


def test_tiled_equals_untiled(engines):
    _, gpu = engines
    image = random_image(200, 301, seed=5)
    whole = gpu.run(image, tile=1024)
    for tile in (17, 64, 100):
        np.testing.assert_allclose(gpu.run(image, tile=tile), whole, rtol=0, atol=1e-5)
    small = random_image(23, 31, seed=6)
    np.testing.assert_allclose(gpu.run(small, tile=1), gpu.run(small, tile=64), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        MSRNetConfig(log_bases=(2.0, 50.0), depth=2, width=12, f1_width=5),  # generic kernels
        MSRNetConfig(log_bases=(1.0, 10.0, 100.0), depth=1, width=16, f1_width=10),
        MSRNetConfig(log_bases=(5.0,), depth=3, width=64, f1_width=4),
        MSRNetConfig(depth=2, width=8),
    ],
    ids=["w12", "w16-k1", "w64", "w8"],
)
def test_other_configs(config):
    weights = random_weights(config, seed=4)
    image = random_image(37, 70, seed=7)
    ref = _core.Engine(config.engine_dict(), weights).run(image, tile=16)
    gpu = _core.CudaEngine(config.engine_dict(), weights)
    np.testing.assert_allclose(gpu.run(image, tile=16), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(gpu.run(image, tile=70), ref, rtol=0, atol=TOL)


def test_receptive_radius(engines, default_model):
    config, _ = default_model
    assert engines[1].receptive_radius == config.receptive_radius


def test_progress_called_per_tile(engines):
    _, gpu = engines
    image = random_image(50, 70, seed=8)
    calls = []
    out = gpu.run(image, tile=32, progress=lambda d, t: calls.append((d, t)))
    total = math.ceil(50 / 32) * math.ceil(70 / 32)
    assert calls == [(i, total) for i in range(1, total + 1)]
    np.testing.assert_allclose(out, gpu.run(image, tile=128), rtol=0, atol=1e-5)


def test_cancel_and_reuse(engines):
    _, gpu = engines
    image = random_image(64, 64, seed=9)
    seen = []

    def stop_after_two(done, total):
        seen.append(done)
        return done < 2

    with pytest.raises(_core.Cancelled):
        gpu.run(image, tile=16, progress=stop_after_two)
    assert seen == [1, 2]

    class Boom(Exception):
        pass

    def explode(done, total):
        raise Boom()

    with pytest.raises(Boom):
        gpu.run(image, tile=16, progress=explode)

    # still usable afterwards, and identical to a clean run
    a = gpu.run(image, tile=16)
    b = gpu.run(image, tile=64)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_threads_argument_is_accepted(engines):
    _, gpu = engines
    image = random_image(9, 9)
    np.testing.assert_array_equal(gpu.run(image, tile=8, threads=3), gpu.run(image, tile=8))


def test_bad_arguments(default_model):
    config, weights = default_model
    with pytest.raises((ValueError, RuntimeError)):
        _core.CudaEngine(config.engine_dict(), weights, device=_core.cuda_device_count() + 5)
    bad = dict(weights)
    bad["f3.bias"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError):
        _core.CudaEngine(config.engine_dict(), bad)
    gpu = _core.CudaEngine(config.engine_dict(), weights)
    with pytest.raises(TypeError):
        gpu.run(np.zeros((4, 4, 3), np.float64))
    with pytest.raises(ValueError):
        gpu.run(np.zeros((4, 4), np.float32))


def test_engine_wrapper_device_cuda(default_model):
    from msrnet_napari.checkpoint import Checkpoint
    from msrnet_napari.engine import Engine, cuda_available

    config, weights = default_model
    assert cuda_available()
    ckpt = Checkpoint(config=config, weights=weights, metadata={}, source="test")
    image = random_image(33, 48, seed=10)
    gpu = Engine(ckpt, device="cuda")
    cpu = Engine(ckpt, device="cpu")
    assert gpu.device == "cuda"
    np.testing.assert_allclose(gpu.run(image, tile=20), cpu.run(image, tile=20), rtol=0, atol=TOL)


# --------------------------------------------------------------------------- TF32 tensor cores

TF32_BOUND = 2e-3  # x (1 + max |fp32 output|): the bound of cpp/cuda/standalone_test.cu


def _tf32_runs() -> bool:
    """Whether device 0 takes the TF32 kernel (compute capability >= 8.0), as the engine says."""
    config = MSRNetConfig(depth=1, width=32)
    probe = _core.CudaEngine(config.engine_dict(), random_weights(config, 9), precision="tf32")
    return probe.precision == "tf32"


@pytest.mark.parametrize("config", [MSRNetConfig(), MSRNetConfig(log_bases=(1.0, 10.0), depth=3,
                                                                   width=16)],
                         ids=["default", "w16"])
def test_tf32_within_its_bound_of_fp32(config):
    weights = random_weights(config, seed=11)
    fp32 = _core.CudaEngine(config.engine_dict(), weights)
    tf32 = _core.CudaEngine(config.engine_dict(), weights, precision="tf32")
    assert fp32.precision == "fp32"
    if tf32.precision != "tf32":
        pytest.skip("GPU below compute capability 8.0: no TF32 tensor cores")
    image = random_image(257, 300, seed=12)
    ref = _core.Engine(config.engine_dict(), weights).run(image, tile=256)
    a, b = fp32.run(image, tile=128), tf32.run(image, tile=128)
    bound = TF32_BOUND * (1.0 + float(np.abs(ref).max()))
    err = float(np.abs(b - ref).max())
    assert 0 < err <= bound, (err, bound)  # > 0: the tensor-core kernel really ran
    assert float(np.abs(b - a).max()) <= bound
    np.testing.assert_array_equal(tf32.run(image, tile=1024), tf32.run(image, tile=1024))
    np.testing.assert_allclose(tf32.run(image, tile=64), b, rtol=0, atol=1e-5)  # tiling exact


@pytest.mark.parametrize("width", [8, 12, 64])
def test_tf32_falls_back_to_fp32_where_no_kernel(width):
    config = MSRNetConfig(depth=2, width=width)
    weights = random_weights(config, seed=13)
    eng = _core.CudaEngine(config.engine_dict(), weights, precision="tf32")
    assert eng.precision == "fp32"
    image = random_image(30, 41, seed=14)
    np.testing.assert_array_equal(eng.run(image, tile=16),
                                  _core.CudaEngine(config.engine_dict(), weights).run(image, tile=16))


def test_enhance_precision_tf32_on_cuda():
    import msrnet_napari

    x = (np.random.default_rng(15).random((300, 280)) * 4000).astype(np.uint16)
    a = msrnet_napari.enhance(x, model="microscopy", device="cuda", dtype=np.float32)
    b = msrnet_napari.enhance(x, model="microscopy", device="cuda", dtype=np.float32,
                              precision="tf32")
    c = msrnet_napari.enhance(x, model="microscopy", device="cpu", dtype=np.float32)
    np.testing.assert_allclose(a, c, rtol=0, atol=1e-3 * float(c.max()))
    if _tf32_runs():
        assert not np.array_equal(a, b)
    assert float(np.abs(b - a).max()) <= 1e-2 * float(c.max())  # relative to the data range
    with pytest.raises(ValueError, match="precision"):
        _core.CudaEngine(MSRNetConfig().engine_dict(), random_weights(MSRNetConfig()),
                         precision="fp16")
