"""The compiled engine and enhance() against the PyTorch reference model (needs torch).

Everything else about the engine and enhance() is tested without torch
(tests/test_engine.py, tests/test_enhance.py, weights from conftest.random_weights).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from msrnet_napari import _core, enhance, exposure_gain_for  # noqa: E402
from msrnet_napari.checkpoint import Checkpoint  # noqa: E402
from msrnet_napari.config import MSRNetConfig  # noqa: E402
from msrnet_napari.engine import Engine  # noqa: E402
from msrnet_napari.training.model import (  # noqa: E402
    MSRNet,
    init_weights,
    model_from_checkpoint,
    save_checkpoint,
)

from conftest import (  # noqa: E402
    check_gray_is_replicated_rgb,
    check_uint8_rgb_is_network,
    make_model,
    numpy_weights,
    rng_image,
    torch_forward,
)

TOL = 1e-4
SMALL = MSRNetConfig(log_bases=(1.0, 50.0), depth=3, width=8, f1_width=5)


def rand_image(h, w, seed=0, scale=1.0):
    return (np.random.default_rng(seed).random((h, w, 3), dtype=np.float32) * scale)


def core_engine(model):
    return _core.Engine(model.config.engine_dict(), numpy_weights(model))


def checkpoint_of(model):
    return Checkpoint(config=model.config, weights=numpy_weights(model), metadata={},
                      source="<test>")


# ------------------------------------------------------------------ _core.Engine
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


def test_parity_engine_wrapper_cpu():
    model = make_model(SMALL, seed=1)
    eng = Engine(checkpoint_of(model), device="cpu")
    img = rand_image(20, 30)
    np.testing.assert_allclose(eng.run(img, tile=8), torch_forward(model, img), atol=TOL, rtol=0)
    view = rand_image(20, 60)[:, ::2]  # non-contiguous input is copied by the wrapper
    np.testing.assert_allclose(eng.run(view), torch_forward(model, np.ascontiguousarray(view)),
                               atol=TOL, rtol=0)


# ------------------------------------------------------------------ enhance()
CONFIG = MSRNetConfig(depth=3, width=8)


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "small.pt"
    return save_checkpoint(init_weights(MSRNet(CONFIG), seed=3), path)


@pytest.fixture(scope="module")
def reference(ckpt_path):
    """The PyTorch model on the same weights: [0,1] float HxWx3 -> raw float HxWx3."""
    model = model_from_checkpoint(ckpt_path)

    def run(unit_hwc):
        x = torch.from_numpy(np.ascontiguousarray(unit_hwc, np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            return model(x)[0].permute(1, 2, 0).numpy()

    return run


def test_enhance_uint8_rgb_matches_reference(ckpt_path, reference):
    check_uint8_rgb_is_network(ckpt_path, reference)


def test_enhance_gray_runs_as_replicated_rgb_and_averaged(ckpt_path, reference):
    check_gray_is_replicated_rgb(ckpt_path, reference, atol=1e-4)


@pytest.mark.parametrize("space", ["display", "linear"])
def test_exposure_normalised_model_matches_reference(space, tmp_path):
    config = MSRNetConfig(depth=2, width=8, exposure_target=0.4 if space == "display" else 0.2,
                          exposure_space=space)
    path = save_checkpoint(init_weights(MSRNet(config), seed=5), tmp_path / f"exposure_{space}.pt")
    model = model_from_checkpoint(path)
    img = rng_image((20, 24, 3), np.float32) * 0.1  # dark: gain > 1
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = model(x)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    np.testing.assert_allclose(enhance(img, weights=path), expected, atol=1e-4)
    # the torch model's own gain (MSRNet.exposure_gain) is the one enhance() uses
    gain = float(model.exposure_gain(x).reshape(()))
    assert exposure_gain_for(img, weights=path) == pytest.approx(gain, rel=1e-5)
