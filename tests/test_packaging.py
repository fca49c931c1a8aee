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


def test_core_path_imports_neither_torch_nor_napari_nor_qt():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, msrnet_napari\n"
        "msrnet_napari.enhance(np.zeros((8, 8, 3), np.uint8))\n"
        "import msrnet_napari.cli, msrnet_napari.engine\n"
        "bad = sorted(m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6', 'magicgui')"
        " if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
