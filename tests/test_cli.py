"""msrnet-enhance (msrnet_napari.cli) and the file reader/writer (image_files).

Enhancing tests need the compiled engine; the weights come from a random
PyTorch checkpoint file when torch is installed, otherwise from an in-memory
random Checkpoint handed to the CLI (so these tests also run without torch,
e.g. in cibuildwheel). The contract checked: every output equals
``msrnet_napari.enhance(input, weights=same)`` in shape, dtype and values.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zlib

import numpy as np
import pytest

from msrnet_napari import cli
from msrnet_napari import image_files as imf
from msrnet_napari.config import MSRNetConfig

from conftest import cli_checkpoint, imported_in_fresh_process, random_weights

imageio = pytest.importorskip("imageio.v3")
tifffile = pytest.importorskip("tifffile")

SMALL = MSRNetConfig(depth=2, width=8)
TILE = "32"


# --------------------------------------------------------------------------- fixtures


def _random_checkpoint():
    ckpt = random_weights(SMALL, seed=0)
    ckpt.weights["f3.weight"] = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    return ckpt


@pytest.fixture
def engine():
    pytest.importorskip("msrnet_napari._core", reason="compiled engine not built")


@pytest.fixture
def weights(engine, tmp_path, monkeypatch):
    """(extra CLI args, weights for enhance()) naming the same random model."""
    try:
        import torch  # noqa: F401
    except ImportError:
        ckpt = _random_checkpoint()
        monkeypatch.setattr(cli, "_resolve_weights", lambda *args: ckpt)
        return [], ckpt
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    path = save_checkpoint(init_weights(MSRNet(SMALL), seed=0), tmp_path / "w.pt")
    return ["--weights", str(path)], str(path)


def _dark(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    high = 60 if np.dtype(dtype) == np.uint8 else 3000
    return (rng.random(shape) * high).astype(dtype)


def _run(args, extra=(), quiet=True):
    return cli.main([*map(str, args), "--tile", TILE, *extra, *(["-q"] if quiet else [])])


def _expected(array, weights, **layout):
    import msrnet_napari

    return msrnet_napari.enhance(array, weights=weights, tile=int(TILE), **layout)


# --------------------------------------------------------------------------- formats

def _write_png(path, a):
    imageio.imwrite(path, a)


def _write_tif(path, a, **kw):
    tifffile.imwrite(path, a, **kw)


# name, shape, dtype, writer, enhance layout, pages
CASES = {
    "png_rgb8": ("x.png", (48, 64, 3), np.uint8, _write_png, {"rgb": True}, 1),
    "png_gray8": ("x.png", (48, 64), np.uint8, _write_png, {"rgb": False}, 1),
    "png_rgba8": ("x.png", (48, 64, 4), np.uint8, _write_png, {"rgb": True}, 1),
    "png_gray16": ("x.png", (48, 64), np.uint16, _write_png, {"rgb": False}, 1),
    "png_rgb16": ("x.png", (48, 64, 3), np.uint16,
                  lambda p, a: imf.write_image(p, a), {"rgb": True}, 1),
    "tif_gray16": ("x.tif", (48, 64), np.uint16,
                   lambda p, a: _write_tif(p, a, photometric="minisblack"), {"rgb": False}, 1),
    "tif_pages16": ("x.tiff", (3, 48, 64), np.uint16,
                    lambda p, a: _write_tif(p, a, photometric="minisblack", metadata=None),
                    {"rgb": False}, 3),
    "tif_rgb_pages8": ("x.tif", (2, 48, 64, 3), np.uint8,
                       lambda p, a: _write_tif(p, a, photometric="rgb", metadata=None),
                       {"rgb": True}, 2),
    "tif_float32": ("x.tif", (48, 64), np.float32,
                    lambda p, a: _write_tif(p, a / 4000, photometric="minisblack"),
                    {"rgb": False}, 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_equals_enhance(case, weights, tmp_path):
    name, shape, dtype, write, layout, pages = CASES[case]
    args, w = weights
    src = tmp_path / "in" / name
    src.parent.mkdir()
    write(src, _dark(shape, dtype if dtype != np.float32 else np.uint16))
    before = src.read_bytes()
    array, _ = imf.read_image(src)

    assert _run([src, "-o", tmp_path / "out"], args) == 0

    out = tmp_path / "out" / f"x_msrnet{src.suffix}"
    assert src.read_bytes() == before, "input modified"
    assert sorted(os.listdir(tmp_path / "out")) == [out.name], "stray files"
    result, meta = imf.read_image(out)
    assert result.shape == array.shape and result.dtype == array.dtype
    assert meta.pages == pages
    expected = _expected(array, w, **layout)
    np.testing.assert_array_equal(result, expected)
    if case == "png_rgba8":
        np.testing.assert_array_equal(result[..., 3], array[..., 3])
    if src.suffix.startswith(".tif"):
        with tifffile.TiffFile(out) as tif, tifffile.TiffFile(src) as orig:
            assert len(tif.pages) == len(orig.pages) == pages
            assert tif.pages[0].photometric == orig.pages[0].photometric


def test_jpeg_stays_jpeg(weights, tmp_path):
    args, w = weights
    src = tmp_path / "photo.jpg"
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)  # JPEG-friendly
    imageio.imwrite(src, smooth, quality=90)
    array, _ = imf.read_image(src)
    assert _run([src, "-o", tmp_path / "out"], args) == 0
    result, meta = imf.read_image(tmp_path / "out" / "photo_msrnet.jpg")
    assert meta.format == "jpeg" and result.shape == array.shape and result.dtype == np.uint8
    expected = _expected(array, w, rgb=True)
    # JPEG is lossy: compare with the same array put through JPEG quality 95
    imageio.imwrite(tmp_path / "ref.jpg", expected, quality=95)
    reference = imageio.imread(tmp_path / "ref.jpg").astype(float)
    assert np.abs(result - reference).mean() < 0.5


def test_planar_tiff_and_format_png(weights, tmp_path):
    """Planar RGB TIFF stays planar as TIFF and becomes H x W x 3 as PNG."""
    args, w = weights
    src = tmp_path / "planar.tif"
    a = _dark((3, 40, 50), np.uint16)
    tifffile.imwrite(src, a, photometric="rgb", planarconfig="separate")
    expected = np.moveaxis(_expected(np.moveaxis(a, 0, -1), w, rgb=True), -1, 0)
    assert _run([src, "-o", tmp_path / "t"], args) == 0
    with tifffile.TiffFile(tmp_path / "t" / "planar_msrnet.tif") as tif:
        assert tif.pages[0].planarconfig == 2 and len(tif.pages) == 1
        np.testing.assert_array_equal(tif.asarray(), expected)
    assert _run([src, "-o", tmp_path / "p", "--format", "png"], args) == 0
    png, meta = imf.read_image(tmp_path / "p" / "planar_msrnet.png")
    assert meta.kind == "rgb" and png.dtype == np.uint16
    np.testing.assert_array_equal(png, np.moveaxis(expected, 0, -1))


@pytest.mark.parametrize("planar", [False, True])
def test_multichannel_tiff_per_channel(weights, tmp_path, planar):
    """A 5-sample minisblack TIFF: every channel enhanced as gray, layout kept."""
    args, w = weights
    shape = (5, 20, 30) if planar else (20, 30, 5)
    a = _dark(shape, np.uint8)
    tifffile.imwrite(tmp_path / "m.tif", a, photometric="minisblack",
                     planarconfig="separate" if planar else "contig")
    assert _run([tmp_path / "m.tif", "-o", tmp_path / "o"], args) == 0
    axis = 0 if planar else -1
    expected = np.stack([_expected(np.take(a, i, axis=axis), w, rgb=False) for i in range(5)],
                        axis=axis)
    with tifffile.TiffFile(tmp_path / "o" / "m_msrnet.tif") as tif:
        assert tif.pages[0].planarconfig == (2 if planar else 1)
        np.testing.assert_array_equal(tif.asarray(), expected)


def test_bit_depth_option(weights, tmp_path):
    args, w = weights
    a = _dark((24, 24), np.uint16)  # max < 4096: auto-detection would say 12 bits
    tifffile.imwrite(tmp_path / "a.tif", a)
    assert _run([tmp_path / "a.tif", "-o", tmp_path / "o", "--bit-depth", "16"], args) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o" / "a_msrnet.tif"),
                                  _expected(a, w, rgb=False, bit_depth=16))


@pytest.fixture
def linear_weights(engine, tmp_path, monkeypatch):
    """(extra CLI args, weights for enhance()) naming the same random linear model."""
    return cli_checkpoint(MSRNetConfig(depth=2, width=8, intensity="linear"), 1, tmp_path,
                          monkeypatch)


def _starved(shape, photons=4.0, seed=0):
    """A few photons per pixel over a dark level of 100: the core bins it 2 x 2 (auto)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    clean = np.exp(-((yy - shape[0] / 3) ** 2 + (xx - shape[1] / 2) ** 2) / 72.0)
    counts = rng.poisson(photons * clean) + rng.normal(0, 1.5, shape)
    return np.clip(np.rint(100 + counts), 0, 65535).astype(np.uint16)


def _decision_lines(err):
    return [line for line in err.splitlines() if "intensities):" in line]


def test_binning_option(linear_weights, tmp_path, capsys):
    """--binning is the user's choice passed to the core; auto is the core's rule."""
    args, w = linear_weights
    a = _starved((96, 90))
    tifffile.imwrite(tmp_path / "s.tif", a)
    assert _run([tmp_path / "s.tif", "-o", tmp_path / "auto"], args, quiet=False) == 0
    lines = _decision_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "binning 2x2" in lines[0]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "auto" / "s_msrnet.tif"),
                                  _expected(a, w, rgb=False))
    assert _run([tmp_path / "s.tif", "-o", tmp_path / "off", "--binning", "1"], args,
                quiet=False) == 0
    lines = _decision_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "binning" not in lines[0]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "off" / "s_msrnet.tif"),
                                  _expected(a, w, rgb=False, binning=1))
    assert _run([tmp_path / "s.tif", "-o", tmp_path / "b3", "--binning", "3"], args,
                quiet=False) == 0
    assert "binning 3x3" in _decision_lines(capsys.readouterr().err)[0]


def test_binning_is_refused_by_the_photo_model(weights, tmp_path, capsys):
    args, _ = weights
    imageio.imwrite(tmp_path / "p.png", _dark((32, 32, 3), np.uint8))
    assert _run([tmp_path / "p.png", "-o", tmp_path / "o", "--binning", "2"], args) == 1
    assert "binning applies to the linear" in capsys.readouterr().err
    assert _run([tmp_path / "p.png", "-o", tmp_path / "o"], args) == 0  # auto: nothing passed


@pytest.mark.parametrize("value", ["0", "5", "two", "1.5", ""])
def test_bad_binning_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["a.tif", "-o", "o", "--binning", value])
    assert exc.value.code == 2
    assert "--binning: must be 'auto' or a binning factor 1..4" in capsys.readouterr().err


def test_png_to_tif(weights, tmp_path):
    args, w = weights
    src = tmp_path / "a.png"
    a = _dark((30, 40, 3), np.uint8)
    imageio.imwrite(src, a)
    assert _run([src, "-o", tmp_path / "o", "--format", "tif"], args) == 0
    out = tifffile.imread(tmp_path / "o" / "a_msrnet.tif")
    np.testing.assert_array_equal(out, _expected(a, w, rgb=True))


def test_multipage_to_png_is_refused_per_file(weights, tmp_path, capsys):
    args, _ = weights
    stack, single = tmp_path / "stack.tif", tmp_path / "single.png"
    tifffile.imwrite(stack, _dark((3, 20, 20), np.uint16), photometric="minisblack")
    imageio.imwrite(single, _dark((20, 20), np.uint8))
    assert _run([stack, single, "-o", tmp_path / "o", "--format", "png"], args) == 1
    err = capsys.readouterr().err
    assert f"error: {stack}:" in err and "3 pages" in err
    assert os.listdir(tmp_path / "o") == ["single_msrnet.png"]


# --------------------------------------------------------------------------- batch behaviour

def test_folder_input_and_bad_file(weights, tmp_path, capsys):
    args, _ = weights
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    imageio.imwrite(d / "good.png", _dark((24, 24, 3), np.uint8))
    imageio.imwrite(d / "sub" / "nested.png", _dark((24, 24, 3), np.uint8))  # not recursive
    (d / "notes.txt").write_text("not an image")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (d / "empty.tif").write_bytes(b"")

    rc = _run([d, "-o", tmp_path / "out"], args, quiet=False)
    captured = capsys.readouterr()
    assert rc == 1
    assert sorted(os.listdir(tmp_path / "out")) == ["good_msrnet.png"]
    assert f"error: {d / 'corrupt.png'}:" in captured.err
    assert f"error: {d / 'empty.tif'}:" in captured.err
    assert "good.png" in captured.err and "[3/3]" in captured.err
    assert "notes" not in captured.err and "nested" not in captured.err
    assert captured.out == ""


def test_missing_input_is_reported(weights, tmp_path, capsys):
    args, _ = weights
    good = tmp_path / "g.png"
    imageio.imwrite(good, _dark((16, 16), np.uint8))
    assert _run([tmp_path / "nope.png", good, "-o", tmp_path / "o"], args) == 1
    assert f"error: {tmp_path / 'nope.png'}: no such file" in capsys.readouterr().err
    assert (tmp_path / "o" / "g_msrnet.png").is_file()


def test_invalid_data_is_reported_and_rest_processed(weights, tmp_path, capsys):
    """enhance() raising ValueError (float data outside [0, 1]) fails that file only."""
    args, _ = weights
    bad, good = tmp_path / "bad.tif", tmp_path / "good.tif"
    tifffile.imwrite(bad, np.full((16, 16), 7.5, np.float32))
    tifffile.imwrite(good, _dark((16, 16), np.uint16))
    assert _run([bad, good, "-o", tmp_path / "o"], args) == 1
    assert f"error: {bad}:" in capsys.readouterr().err
    assert os.listdir(tmp_path / "o") == ["good_msrnet.tif"]


def test_never_overwrites_an_input(weights, tmp_path, capsys):
    args, _ = weights
    src = tmp_path / "a.png"
    imageio.imwrite(src, _dark((16, 16), np.uint8))
    before = src.read_bytes()
    for extra in ([], ["--overwrite"]):
        rc = _run([src, "-o", tmp_path, "--suffix", "", *extra], args)
        assert rc == 1
        err = capsys.readouterr().err
        assert f"error: {src}:" in err and "input" in err
        assert src.read_bytes() == before
    # the same through another spelling of the folder, and with --format keep on a dir
    rc = _run([tmp_path, "-o", tmp_path / ".." / tmp_path.name, "--suffix", "", "--overwrite"], args)
    assert rc == 1 and src.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a.png", *(["w.pt"] if args else [])]


def test_output_of_one_input_is_another_input(weights, tmp_path, capsys):
    args, _ = weights
    a, b = tmp_path / "a.png", tmp_path / "a_msrnet.png"
    imageio.imwrite(a, _dark((16, 16), np.uint8))
    imageio.imwrite(b, _dark((16, 16), np.uint8, seed=1))
    before = b.read_bytes()
    assert _run([a, b, "-o", tmp_path, "--overwrite"], args) == 1
    assert b.read_bytes() == before
    assert "input" in capsys.readouterr().err
    assert (tmp_path / "a_msrnet_msrnet.png").is_file()


def test_existing_output_needs_overwrite(weights, tmp_path, capsys):
    args, w = weights
    src = tmp_path / "a.png"
    a = _dark((16, 16, 3), np.uint8)
    imageio.imwrite(src, a)
    out = tmp_path / "o" / "a_msrnet.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    assert _run([src, "-o", out.parent], args) == 1
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"old"
    assert _run([src, "-o", out.parent, "--overwrite"], args) == 0
    np.testing.assert_array_equal(imf.read_image(out)[0], _expected(a, w, rgb=True))


def test_colliding_outputs(weights, tmp_path, capsys):
    args, _ = weights
    imageio.imwrite(tmp_path / "a.png", _dark((16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "a.tif", _dark((16, 16), np.uint8))
    assert _run([tmp_path / "a.png", tmp_path / "a.tif", "-o", tmp_path / "o",
                 "--format", "png"], args) == 1
    assert "also be written" in capsys.readouterr().err
    assert os.listdir(tmp_path / "o") == ["a_msrnet.png"]


def test_progress_output(weights, tmp_path, capsys):
    args, _ = weights
    src = tmp_path / "a.png"
    imageio.imwrite(src, _dark((64, 64, 3), np.uint8))
    assert _run([src, "-o", tmp_path / "o"], args, quiet=False) == 0
    err = capsys.readouterr().err
    assert "[1/1]" in err and "tile" in err and "1 written, 0 failed" in err
    src.unlink()
    imageio.imwrite(src, _dark((64, 64, 3), np.uint8))
    assert _run([src, "-o", tmp_path / "o2"], args, quiet=True) == 0
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- interruption

def test_ctrl_c_cancels_cleanly(weights, tmp_path, monkeypatch, capsys):
    """SIGINT during enhancement: cancel token -> Cancelled -> exit 130, nothing written."""
    args, _ = weights
    for name in ("a.png", "b.png"):
        imageio.imwrite(tmp_path / name, _dark((96, 96, 3), np.uint8))
    calls = []
    original = cli._Progress.__call__

    def interrupting(self, done, total):
        calls.append(done)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)
        return original(self, done, total)

    monkeypatch.setattr(cli._Progress, "__call__", interrupting)
    rc = _run([tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "o"], args)
    assert rc == 130
    assert len(calls) < 9  # stopped long before the 9 tiles of a.png were done
    assert os.listdir(tmp_path / "o") == []
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_keyboard_interrupt_while_writing_leaves_nothing(weights, tmp_path, monkeypatch):
    args, _ = weights
    imageio.imwrite(tmp_path / "a.png", _dark((16, 16), np.uint8))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(imf, "_write_pillow", boom)
    assert _run([tmp_path / "a.png", "-o", tmp_path / "o"], args) == 130
    assert os.listdir(tmp_path / "o") == []


# --------------------------------------------------------------------------- setup errors

def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("msrnet-enhance", "--weights", "--tile", "--threads", "--device", "--precision",
                 "--suffix",
                 "--format", "--overwrite", "--quiet", "quality 95", "--binning"):
        assert word in out


@pytest.mark.parametrize("argv", [
    [],
    ["a.png"],  # no -o
    ["a.png", "-o", "o", "--format", "bmp"],
    ["a.png", "-o", "o", "--device", "tpu"],
    ["a.png", "-o", "o", "--precision", "fp16"],
    ["a.png", "-o", "o", "--tile", "-1"],
    ["a.png", "-o", "o", "--threads", "x"],
    ["a.png", "-o", "o", "--weights", "/no/such/checkpoint.pt"],
    ["a.png", "-o", "o", "--suffix", "a/b"],
])
def test_usage_errors_exit_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_outdir_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path), "-o", str(tmp_path / "f")])
    assert exc.value.code == 2


def test_no_images_found(tmp_path, capsys):
    assert cli.main([str(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert "no image files" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["auto", "photo", "microscopy"])
def test_missing_default_weights(engine, tmp_path, capsys, monkeypatch, model):
    from msrnet_napari import models, weights

    empty = tmp_path / "no_weights"
    empty.mkdir()
    monkeypatch.setattr(models, "_WEIGHTS_DIR", empty)  # an install without bundled models
    monkeypatch.setattr(weights, "_WEIGHTS_DIR", empty)
    assert models.available_models() == []
    images = tmp_path / "in"
    images.mkdir()
    imageio.imwrite(images / "a.png", _dark((16, 16), np.uint8))
    imageio.imwrite(images / "b.png", _dark((16, 16), np.uint8))
    assert cli.main([str(images), "-o", str(tmp_path / "o"), "--model", model]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "weights" in err and "not installed" in err
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []


def test_device_cuda_without_gpu(weights, tmp_path, capsys):
    from msrnet_napari.engine import cuda_available

    if cuda_available():
        pytest.skip("a CUDA GPU is available")
    args, _ = weights
    imageio.imwrite(tmp_path / "a.png", _dark((16, 16), np.uint8))
    assert _run([tmp_path / "a.png", "-o", tmp_path / "o", "--device", "cuda"], args) == 1
    assert "cuda" in capsys.readouterr().err.lower()


# --------------------------------------------------------------------------- console script

def _console_script():
    exe = shutil.which("msrnet-enhance")
    if exe is None:
        pytest.skip("msrnet-enhance is not on PATH (package not installed)")
    return exe


def test_console_script_usage(tmp_path):
    exe = _console_script()
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--overwrite" in res.stdout
    res = subprocess.run([exe, str(tmp_path), "-o", str(tmp_path / "o"), "--weights",
                          str(tmp_path / "missing.pt")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "missing.pt" in res.stderr


def test_console_script_enhances(weights, tmp_path):
    exe = _console_script()
    args, w = weights
    if not args:
        pytest.skip("needs torch to write a checkpoint file for the subprocess")
    src = tmp_path / "a.tif"
    a = _dark((2, 24, 24), np.uint16)
    tifffile.imwrite(src, a, photometric="minisblack", metadata=None)
    res = subprocess.run([exe, str(src), "-o", str(tmp_path / "o"), *args, "--tile", TILE],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "[1/1]" in res.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o" / "a_msrnet.tif"),
                                  _expected(a, w, rgb=False))
    res = subprocess.run([exe, str(src), "-o", str(tmp_path / "o"), *args],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "exists" in res.stderr


# --------------------------------------------------------------------------- image_files (no engine)

def _png_with_filters(a, filters):
    """Reference PNG encoder (slow, pure Python) using the given row filter types."""
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    bpp = c * a.dtype.itemsize
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder(">")).view(np.uint8)
    raw = raw.reshape(h, w * bpp).astype(int)
    out = bytearray()
    for r in range(h):
        t = filters[r % len(filters)]
        out.append(t)
        for i in range(w * bpp):
            left = raw[r, i - bpp] if i >= bpp else 0
            up = raw[r - 1, i] if r else 0
            ul = raw[r - 1, i - bpp] if r and i >= bpp else 0
            p = left + up - ul
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
            paeth = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
            pred = [0, left, up, (left + up) // 2, paeth][t]
            out.append((raw[r, i] - pred) & 255)
    ihdr = struct.pack(">IIBBBBB", w, h, a.dtype.itemsize * 8, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return (imf._PNG_SIGNATURE + imf._png_chunk(b"IHDR", ihdr)
            + imf._png_chunk(b"IDAT", zlib.compress(bytes(out))) + imf._png_chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_decoder_all_filters(channels, dtype):
    rng = np.random.default_rng(channels)
    shape = (7, 9) if channels == 1 else (7, 9, channels)
    a = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    for filters in ([0], [1], [2], [3], [4], [4, 0, 3, 1, 2]):
        decoded, _ = imf._decode_png(_png_with_filters(a, filters))
        np.testing.assert_array_equal(decoded, a)


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 2), (20, 30, 3), (20, 30, 4)])
def test_png16_round_trip(tmp_path, shape):
    a = np.random.default_rng(0).integers(0, 65536, shape).astype(np.uint16)
    path = tmp_path / "x.png"
    imf.write_image(path, a)
    b, meta = imf.read_image(path)
    assert b.dtype == np.uint16 and meta.format == "png"
    np.testing.assert_array_equal(a, b)
    if len(shape) == 2:  # Pillow agrees
        np.testing.assert_array_equal(imageio.imread(path), a)


def test_png_metadata_kept(tmp_path):
    from PIL import Image

    a = _dark((10, 12, 3), np.uint8)
    icc = b"\x00" * 128  # any bytes survive the round trip
    Image.fromarray(a).save(tmp_path / "a.png", dpi=(300, 300), icc_profile=icc)
    b, meta = imf.read_image(tmp_path / "a.png")
    assert meta.info.get("icc_profile") == icc
    imf.write_image(tmp_path / "b.png", b, meta)
    imf.write_image(tmp_path / "c.png", b.astype(np.uint16) * 257, meta)  # 16-bit codec
    for name in ("b.png", "c.png"):
        _, m = imf.read_image(tmp_path / name)
        assert m.info.get("icc_profile") == icc
        assert round(m.info["dpi"][0]) == 300


def test_png_corruption_detected(tmp_path):
    data = bytearray(imf._encode_png(np.zeros((8, 8, 3), np.uint16)))
    data[-20] ^= 0xFF  # inside IDAT
    (tmp_path / "x.png").write_bytes(bytes(data))
    with pytest.raises(imf.ImageFileError, match="corrupt|CRC"):
        imf.read_image(tmp_path / "x.png")


def test_tiff_metadata_kept(tmp_path):
    a = _dark((2, 16, 16, 3), np.uint16)
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, a, photometric="rgb", compression="zlib", resolution=(10.0, 20.0),
                     resolutionunit="CENTIMETER", description="hello", metadata=None)
    b, meta = imf.read_image(src)
    np.testing.assert_array_equal(a, b)
    assert meta.pages == 2 and meta.kind == "rgb"
    imf.write_image(tmp_path / "b.tif", b, meta)
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        page = tif.pages[0]
        assert len(tif.pages) == 2 and page.compression == 8 and page.description == "hello"
        assert page.resolutionunit == 3 and np.allclose(page.resolution, (10.0, 20.0))
        np.testing.assert_array_equal(tif.asarray(), a)


def test_tiff_imagej_display_range_dropped(tmp_path):
    a = _dark((3, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, metadata={"axes": "ZYX"})
    b, meta = imf.read_image(tmp_path / "ij.tif")
    assert meta.pages == 3 and "min=" not in meta.info.get("description", "x=")
    imf.write_image(tmp_path / "out.tif", b, meta)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.is_imagej and len(tif.pages) == 3
        np.testing.assert_array_equal(tif.asarray(), a)


def test_tiff_gray_alpha_and_miniswhite(tmp_path):
    ga = _dark((16, 16, 2), np.uint8)
    tifffile.imwrite(tmp_path / "ga.tif", ga, photometric="minisblack", extrasamples=[2])
    b, meta = imf.read_image(tmp_path / "ga.tif")
    assert meta.kind == "gray+alpha" and meta.channel_axis == -1
    g = _dark((16, 16), np.uint8)
    tifffile.imwrite(tmp_path / "w.tif", g, photometric="miniswhite")
    b, meta = imf.read_image(tmp_path / "w.tif")
    np.testing.assert_array_equal(b, 255 - g)


def test_gray_alpha_enhances_gray_only():
    a = _dark((8, 8, 2), np.uint8)
    meta = imf.ImageMeta("png", "gray+alpha", -1)
    seen = {}

    def fake(x, **kw):
        seen.update(kw, shape=x.shape)
        return x + 1

    out = cli.enhance_image(a, meta, fake)
    assert seen["shape"] == (8, 8) and seen["rgb"] is False
    np.testing.assert_array_equal(out[..., 0], a[..., 0] + 1)
    np.testing.assert_array_equal(out[..., 1], a[..., 1])


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "x.tif"
    target.write_bytes(b"previous")

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(imf, "_write_tiff", fail)
    with pytest.raises(OSError):
        imf.write_image(target, np.zeros((4, 4), np.uint8))
    assert os.listdir(tmp_path) == ["x.tif"] and target.read_bytes() == b"previous"


def test_unsupported_and_incompatible(tmp_path):
    with pytest.raises(imf.ImageFileError, match="unsupported file type"):
        imf.read_image(tmp_path / "x.bmp")
    with pytest.raises(imf.ImageFileError, match="JPEG"):
        imf.write_image(tmp_path / "x.jpg", np.zeros((4, 4), np.uint16))
    with pytest.raises(imf.ImageFileError, match="float32"):
        imf.write_image(tmp_path / "x.png", np.zeros((4, 4), np.float32))
    assert os.listdir(tmp_path) == []


def test_modules_are_torch_and_napari_free():
    assert imported_in_fresh_process(
        ["msrnet_napari.cli", "msrnet_napari.image_files"],
        ["torch", "napari", "qtpy", "imageio", "tifffile"]) == []
