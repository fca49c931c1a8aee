"""Shared fixtures: random torch reference models and their numpy weights."""

from __future__ import annotations

import numpy as np
import pytest

from msrnet_napari.config import MSRNetConfig


def make_model(config: MSRNetConfig | None = None, seed: int = 0):
    """A torch MSRNet with deterministic random weights (eval mode)."""
    torch = pytest.importorskip("torch")
    from msrnet_napari.model import MSRNet, init_weights

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
