"""Shared fixtures: random torch reference models and their numpy weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from msrnet_napari.config import MSRNetConfig


def make_model(config: MSRNetConfig | None = None, seed: int = 0):
    """A torch MSRNet with deterministic random weights (eval mode)."""
    torch = pytest.importorskip("torch")
    from msrnet_napari.training.model import MSRNet, init_weights

    torch.manual_seed(seed)
    return init_weights(MSRNet(config or MSRNetConfig()), seed=seed).eval()


def numpy_weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(np.float32)
            for k, v in model.state_dict().items()}


def torch_forward(model, image_hwc: np.ndarray) -> np.ndarray:
    """Reference output of the torch model on an H x W x 3 float32 image."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(image_hwc)).permute(2, 0, 1)[None]
        return model(x)[0].permute(1, 2, 0).contiguous().numpy()


@pytest.fixture
def random_checkpoint():
    """A torch MSRNet (default config) with init_weights(seed=0), in eval mode."""
    return make_model(None, seed=0)


@pytest.fixture
def make_random_model():
    """Factory: make_random_model(seed=0, config=None) -> torch MSRNet (init_weights(seed))."""
    pytest.importorskip("torch")
    return lambda seed=0, config=None: make_model(config, seed)


# ------------------------------------------------------------ torch-free weights

def cli_checkpoint(config: MSRNetConfig, seed: int, tmp_path, monkeypatch):
    """(extra CLI args, weights for enhance()) naming the same random model: a saved
    checkpoint with torch, else torch-free weights patched into the CLI's resolver."""
    from msrnet_napari import cli

    try:
        import torch  # noqa: F401
    except ImportError:
        ckpt = random_weights(config, seed=seed)
        monkeypatch.setattr(cli, "_resolve_weights", lambda *args: ckpt)
        return [], ckpt
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    path = save_checkpoint(init_weights(MSRNet(config), seed=seed), tmp_path / f"model{seed}.pt")
    return ["--weights", str(path)], str(path)


def random_weights(config: MSRNetConfig | None = None, seed: int = 0,
                   identity: bool = False):
    """A :class:`Checkpoint` with random He-normal weights, built without torch.

    ``identity=True`` makes the network the identity on its input (up to 1e-4):
    f1 takes one near-linear log scale, f2's fusion is zero, f3 is the identity -
    for tests of the data path (scaling, layouts, dask) independent of a model.
    """
    from msrnet_napari.checkpoint import Checkpoint
    from msrnet_napari.config import parameter_shapes

    if identity:
        config = config or MSRNetConfig(log_bases=(1e-4,), depth=2, width=4)
    config = config or MSRNetConfig(depth=2, width=8)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in parameter_shapes(config).items():
        if name.endswith("weight"):
            fan_in = int(np.prod(shape[1:]))
            weights[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            weights[name] = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    if identity:
        assert config.n_scales == 1 and config.f1_width == 3
        eye = np.eye(3, dtype=np.float32)
        weights["f1.fuse.weight"] = eye.reshape(3, 3, 1, 1).copy()
        conv = np.zeros((3, 3, 3, 3), np.float32)
        conv[:, :, 1, 1] = eye
        weights["f1.conv.weight"] = conv
        weights["f2.fuse.weight"][:] = 0
        weights["f3.weight"] = eye.reshape(3, 3, 1, 1).copy()
        for name in ("f1.fuse.bias", "f1.conv.bias", "f2.fuse.bias", "f3.bias"):
            weights[name][:] = 0
    return Checkpoint(config=config, weights=weights, metadata={}, source="<random>")


def imported_in_fresh_process(modules, heavy) -> list[str]:
    """Which of the ``heavy`` modules a fresh interpreter has imported after importing
    ``modules`` (dotted names)."""
    code = (f"import json, sys, {', '.join(modules)}; "
            f"print(json.dumps([m for m in {tuple(heavy)!r} if m in sys.modules]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def rng_image(shape, dtype, high=None, seed=0):
    """A reproducible random image: floats in [0, high or 1), integers in 0..high (or the
    dtype's maximum)."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype) * (high or 1.0)
    return rng.integers(0, (high or np.iinfo(dtype).max) + 1, size=shape).astype(dtype)


def check_uint8_rgb_is_network(weights, network) -> np.ndarray:
    """enhance() of a uint8 RGB image is ``network`` ([0,1] HxWx3 -> raw HxWx3, the same
    weights) on its unit values, clipped and rounded back (within 1); the output."""
    from msrnet_napari import enhance

    img = rng_image((23, 31, 3), np.uint8)
    out = enhance(img, weights=weights)
    assert out.shape == img.shape and out.dtype == np.uint8
    expected = np.rint(np.clip(network(img / np.float32(255.0)), 0, 1) * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1
    return out


def check_gray_is_replicated_rgb(weights, network, atol) -> None:
    """enhance() of a float gray image runs it as replicated RGB and averages the result."""
    from msrnet_napari import enhance

    img = rng_image((17, 12), np.float32)
    out = enhance(img, weights=weights)
    assert out.shape == img.shape and out.dtype == np.float32
    expected = np.clip(network(np.repeat(img[..., None], 3, -1)).mean(-1), 0, 1)
    np.testing.assert_allclose(out, expected, atol=atol)
