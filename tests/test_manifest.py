"""The npe2 manifest (napari.yaml) validates and every command resolves, without Qt."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2")

import msrnet_napari  # noqa: E402

MANIFEST = Path(msrnet_napari.__file__).parent / "napari.yaml"


@pytest.fixture(scope="module")
def manifest():
    return npe2.PluginManifest.from_file(MANIFEST)


def _installed() -> bool:
    eps = metadata.entry_points()
    group = eps.select(group="napari.manifest") if hasattr(eps, "select") else eps.get(
        "napari.manifest", [])
    return any(ep.name == "msrnet-napari" for ep in group)


def test_manifest_fields(manifest):
    assert manifest.name == "msrnet-napari"
    assert manifest.display_name == "MSR-net low-light enhancement"
    contrib = manifest.contributions
    widgets = {w.display_name: w.command for w in contrib.widgets}
    assert widgets == {"MSR-net enhance": "msrnet-napari.make_widget"}
    samples = {s.display_name: s for s in contrib.sample_data}
    assert len(samples) >= 2
    assert "Dark photo (astronaut, darkened)" in samples
    assert any(name.startswith("Dim fluorescence") for name in samples)
    keys = [s.key for s in contrib.sample_data]
    assert len(keys) == len(set(keys))
    # Layers > Filter menu opens the widget
    filter_menu = contrib.menus["napari/layers/filter"]
    assert [item.command for item in filter_menu] == ["msrnet-napari.make_widget"]


def test_every_referenced_command_is_declared(manifest):
    declared = {c.id for c in manifest.contributions.commands}
    used = {w.command for w in manifest.contributions.widgets}
    used |= {s.command for s in manifest.contributions.sample_data}
    used |= {m.command for items in manifest.contributions.menus.values() for m in items}
    assert used <= declared
    assert all(c.id.startswith("msrnet-napari.") for c in manifest.contributions.commands)


def test_python_names_resolve_to_callables(manifest):
    for command in manifest.contributions.commands:
        module_name, _, attr = command.python_name.partition(":")
        obj = getattr(importlib.import_module(module_name), attr)
        assert callable(obj), command.python_name
    manifest.validate_imports()  # npe2's own check


def test_importing_the_plugin_does_not_start_qt():
    """Resolving every python_name must not create a QApplication (npe2 / napari
    import plugins lazily, sometimes with no display)."""
    code = (
        "import importlib, npe2, msrnet_napari, pathlib\n"
        "m = npe2.PluginManifest.from_file(pathlib.Path(msrnet_napari.__file__).parent"
        " / 'napari.yaml')\n"
        "for c in m.contributions.commands:\n"
        "    mod, _, attr = c.python_name.partition(':')\n"
        "    assert callable(getattr(importlib.import_module(mod), attr))\n"
        "from qtpy.QtWidgets import QApplication\n"
        "assert QApplication.instance() is None, 'a QApplication was created on import'\n"
        "print('ok')\n"
    )
    env_code = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300)
    assert env_code.returncode == 0, env_code.stderr[-3000:]
    assert env_code.stdout.strip().endswith("ok")


@pytest.mark.skipif(not _installed(), reason="msrnet-napari is not installed (no entry point)")
def test_installed_plugin_validates():
    """Same as `npe2 validate msrnet-napari`: the installed entry point finds this manifest."""
    installed = npe2.PluginManifest.from_distribution("msrnet-napari")
    assert installed.name == "msrnet-napari"
    installed.validate_imports()
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "msrnet-napari"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
