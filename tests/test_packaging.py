"""What an installed wheel must carry (CI runs the suite against the installed wheel)."""

from pathlib import Path

import numpy as np

import msrnet_napari
from msrnet_napari.weights import default_weights_path, resolve_weights

PACKAGE = Path(msrnet_napari.__file__).parent


def test_manifest_and_model_card_are_installed():
    assert (PACKAGE / "napari.yaml").is_file()
    assert (PACKAGE / "weights" / "MODEL_CARD.md").is_file()


def test_default_weights_are_installed_trained_and_loadable():
    path = default_weights_path()
    assert path.is_file() and path.parent == PACKAGE / "weights"
    ckpt = resolve_weights(None)
    assert ckpt.config.depth == 10 and ckpt.config.width == 32
    # trained, not a fresh init: the training step and validation score travel with it
    assert ckpt.metadata["step"] > 1000 and ckpt.metadata["val_psnr"] > 15


def test_default_model_brightens_a_dark_image():
    rng = np.random.default_rng(0)
    dark = (rng.random((48, 64, 3)) * 40).astype(np.uint8)
    bright = msrnet_napari.enhance(dark)
    assert bright.dtype == np.uint8 and bright.shape == dark.shape
    assert bright.mean() > 2 * dark.mean()
