"""Tests for default-weights lookup and cached checkpoint resolution."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from msrnet_napari import weights as wmod
from msrnet_napari.checkpoint import Checkpoint, CheckpointError
from msrnet_napari.config import MSRNetConfig
from msrnet_napari.weights import (
    DEFAULT_WEIGHTS,
    DefaultWeightsMissingError,
    default_weights_path,
    resolve_weights,
)

SMALL = MSRNetConfig(depth=2, width=4, f1_width=3)


@pytest.fixture(autouse=True)
def _fresh_cache():
    wmod.clear_cache()
    yield
    wmod.clear_cache()


def _write(path: Path, config=SMALL, seed=0, **extra) -> Path:
    pytest.importorskip("torch")
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    return save_checkpoint(init_weights(MSRNet(config), seed=seed), path, **extra)


def test_default_location_is_inside_the_package():
    package_dir = Path(wmod.__file__).resolve().parent
    assert DEFAULT_WEIGHTS == "msrnet_default.pt"
    assert wmod._WEIGHTS_DIR == package_dir / "weights"


def test_installed_default_weights_state():
    """Either the package ships a valid default checkpoint, or it says clearly that it doesn't."""
    expected = Path(wmod.__file__).resolve().parent / "weights" / DEFAULT_WEIGHTS
    if expected.is_file():
        assert default_weights_path() == expected
        ckpt = resolve_weights()
        assert isinstance(ckpt, Checkpoint) and ckpt.source == str(expected)
    else:
        with pytest.raises(FileNotFoundError) as info:
            default_weights_path()
        assert str(expected) in str(info.value)


def test_missing_default_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(wmod, "_WEIGHTS_DIR", tmp_path / "weights")
    expected = tmp_path / "weights" / DEFAULT_WEIGHTS
    for call in (default_weights_path, resolve_weights, lambda: resolve_weights(None)):
        with pytest.raises(DefaultWeightsMissingError) as info:
            call()
        assert isinstance(info.value, FileNotFoundError)
        msg = str(info.value)
        assert str(expected) in msg
        assert "ships no trained default model" in msg and "weights=" in msg


def test_default_is_loaded_when_present(tmp_path, monkeypatch):
    monkeypatch.setattr(wmod, "_WEIGHTS_DIR", tmp_path)
    _write(tmp_path / DEFAULT_WEIGHTS)
    assert default_weights_path() == tmp_path / DEFAULT_WEIGHTS
    ckpt = resolve_weights()
    assert ckpt.config == SMALL
    assert resolve_weights(None) is ckpt  # cached


def test_path_str_and_relative_share_one_cached_object(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.pt")
    first = resolve_weights(path)
    assert isinstance(first, Checkpoint) and first.config == SMALL
    assert resolve_weights(str(path)) is first
    monkeypatch.chdir(tmp_path)
    assert resolve_weights("a.pt") is first
    assert resolve_weights(Path(".") / "sub" / ".." / "a.pt") is first
    info = wmod._load_cached.cache_info()
    assert info.misses == 1 and info.hits == 3


def test_cache_does_not_reload(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.pt")
    calls = []
    real = wmod.load_checkpoint
    monkeypatch.setattr(wmod, "load_checkpoint", lambda p: calls.append(p) or real(p))
    for _ in range(5):
        resolve_weights(path)
    assert calls == [str(path.resolve())]


def test_rewritten_file_is_reloaded(tmp_path):
    path = _write(tmp_path / "a.pt", seed=0)
    first = resolve_weights(path)
    _write(path, config=MSRNetConfig(depth=3, width=4, f1_width=3), seed=1)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # even on coarse clocks
    second = resolve_weights(path)
    assert second is not first
    assert second.config.depth == 3


def test_distinct_files_are_distinct(tmp_path):
    a = _write(tmp_path / "a.pt", seed=0)
    b = tmp_path / "b.pt"
    shutil.copy(a, b)
    assert resolve_weights(a) is not resolve_weights(b)


def test_checkpoint_passes_through(tmp_path):
    ckpt = resolve_weights(_write(tmp_path / "a.pt"))
    assert resolve_weights(ckpt) is ckpt


@pytest.mark.parametrize("bad", [42, 1.5, b"/tmp/x.pt", ["a.pt"], {"weights": 1}, object()])
def test_wrong_type_is_type_error(bad):
    with pytest.raises(TypeError) as info:
        resolve_weights(bad)
    assert type(bad).__name__ in str(info.value)
    assert "path" in str(info.value)


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        resolve_weights(tmp_path / "nope.pt")


def test_invalid_file_errors_are_not_cached_as_success(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a zip"):
        resolve_weights(path)
    _write(path)  # fixed in place
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert resolve_weights(path).config == SMALL
