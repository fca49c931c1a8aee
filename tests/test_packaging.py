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


def test_repaired_wheel_is_manylinux_and_loads_its_bundled_libraries():
    """scripts/test.sh installs the auditwheel-repaired wheel and sets MSRNET_TEST_REPAIRED_WHEEL."""
    import os
    import subprocess
    import sys
    from importlib.metadata import distribution

    import pytest

    if not os.environ.get("MSRNET_TEST_REPAIRED_WHEEL") or not sys.platform.startswith("linux"):
        pytest.skip("only for the auditwheel-repaired Linux wheel that scripts/test.sh installs")
    wheel_info = distribution("msrnet-napari").read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_info.splitlines() if line.startswith("Tag:")]
    assert tags and all("-manylinux" in tag for tag in tags), tags   # manylinux_2_x (or 2014)

    libs = PACKAGE.parent / "msrnet_napari.libs"   # where auditwheel puts what it bundles
    bundled = sorted(p.name for p in libs.iterdir()) if libs.is_dir() else []
    assert not [n for n in bundled if n.startswith("libcuda.")], bundled   # the driver's own library
    # the OpenMP runtime the engine loads is the bundled copy, not the build machine's
    code = "import msrnet_napari._core\nprint(open('/proc/self/maps').read())"
    maps = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    gomp = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line}
    assert all(path.startswith(str(libs)) for path in gomp), (gomp, bundled)


def test_both_bundled_models_their_cards_and_the_real_sample_are_installed():
    from msrnet_napari.models import available_models, model_info

    assert available_models() == ["photo", "microscopy"]
    micro = model_info("microscopy")
    assert micro.card_path.is_file() and micro.path.parent == PACKAGE / "weights"
    ckpt = resolve_weights(micro.path)
    assert ckpt.config.intensity == "linear" and ckpt.metadata["step"] > 1000
    assert (PACKAGE / "samples" / "bbbc022_u2os.npz").is_file()
    assert (PACKAGE / "samples" / "bbbc022_LICENSE.txt").is_file()
