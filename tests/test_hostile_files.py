"""Hostile image files and command lines (issue 15): no crash, no hang, no memory
blow-up, no silent wrong result.

Every hostile file is generated here; the risky reads run in a subprocess
under ``resource.setrlimit`` (address space: the interpreter's size after
imports + HEADROOM; CPU seconds) and a wall-clock timeout, and each asserts
the result (or the specific error), the CPU time and the growth of the peak
RSS.
"""

from __future__ import annotations

import os
import signal
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from _limits import LIMITS_PRELUDE, limited_env, run_limited

from msrnet_napari import cli
from msrnet_napari import image_files as imf

imageio = pytest.importorskip("imageio.v3")
tifffile = pytest.importorskip("tifffile")
PIL_Image = pytest.importorskip("PIL.Image")

DEFAULT_MAX_PIXELS = 1 << 28  # image_files.DEFAULT_MAX_PIXELS (checked below)
MAX_CPU = 3.0
MAX_RSS_GROWTH_MB = 64

# --------------------------------------------------------------------------- subprocess

_RUNNER = LIMITS_PRELUDE + r"""
import numpy as np
from msrnet_napari.image_files import read_image
import PIL.Image, tifffile  # imported before the limits, like a real run would have

headroom, cpu, path, max_pixels = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
apply_limits(headroom, cpu)
before, t0 = peak_mb(), time.process_time()
try:
    kwargs = {} if max_pixels == 1 << 28 else {"max_pixels": max_pixels}
    array, meta = read_image(path, **kwargs)
    out = {"ok": True, "shape": list(array.shape), "dtype": str(array.dtype),
           "kind": meta.kind, "max": int(array.max()) if array.size else 0}
except BaseException as exc:
    out = {"ok": False, "type": type(exc).__name__, "error": str(exc)[:3000]}
out["cpu"] = time.process_time() - t0
out["rss_growth_mb"] = peak_mb() - before
print(json.dumps(out))
"""

_env = limited_env


def _read(path, max_pixels=DEFAULT_MAX_PIXELS, timeout=60):
    """read_image(path) in a fresh, limited subprocess: its outcome as a dict."""
    out = run_limited(_RUNNER, str(path), str(max_pixels), timeout=timeout,
                      what=f"reading {path}", who="reader")
    assert out["cpu"] < MAX_CPU, out
    assert out["rss_growth_mb"] < MAX_RSS_GROWTH_MB, out
    return out


def _refused(path, *fragments, max_pixels=DEFAULT_MAX_PIXELS, error="ImageFileError"):
    out = _read(path, max_pixels)
    assert not out["ok"] and out["type"] == error, out
    for fragment in fragments:
        assert fragment in out["error"], out
    return out["error"]


# --------------------------------------------------------------------------- crafting files

def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(
        ">I", zlib.crc32(ctype + data) & 0xFFFFFFFF)


def _png(width, height, depth, color_type, idat: bytes, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def _filter_rows(raw: np.ndarray, bpp: int, filters) -> bytes:
    """PNG filtering of (h, stride) uint8 rows, vectorised (encoding needs no
    sequential pass: every predictor reads the raw, known bytes)."""
    h, stride = raw.shape
    r = raw.astype(np.int32)
    left = np.zeros_like(r)
    left[:, bpp:] = r[:, :-bpp]
    up = np.zeros_like(r)
    up[1:] = r[:-1]
    ul = np.zeros_like(r)
    ul[1:, bpp:] = r[:-1, :-bpp]
    p = left + up - ul
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - ul)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
    preds = [np.zeros_like(r), left, up, (left + up) >> 1, paeth]
    out = np.empty((h, stride + 1), np.uint8)
    for i in range(h):
        t = filters[i % len(filters)]
        out[i, 0] = t
        out[i, 1:] = (r[i] - preds[t][i]) & 0xFF
    return out.tobytes()


def _png_array(a: np.ndarray, filters=(4,)) -> bytes:
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    depth = a.dtype.itemsize * 8
    bpp = c * a.dtype.itemsize
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder(">")).view(np.uint8)
    raw = raw.reshape(h, w * bpp)
    return _png(w, h, depth, {1: 0, 2: 4, 3: 2, 4: 6}[c],
                zlib.compress(_filter_rows(raw, bpp, list(filters))))


def _zeros_deflated(nbytes: int, prefix: bytes = b"") -> bytes:
    """zlib stream of prefix + nbytes zero bytes, made without holding them."""
    comp = zlib.compressobj(9)
    parts = [comp.compress(prefix)]
    block = bytes(1 << 20)
    for _ in range(nbytes >> 20):
        parts.append(comp.compress(block))
    parts.append(comp.compress(bytes(nbytes & ((1 << 20) - 1))))
    parts.append(comp.flush())
    return b"".join(parts)


def _tiff(width, height, *, bits=16, compression=8, strip: bytes = b"", samples=1,
          photometric=1) -> bytes:
    """A little-endian one-page, one-strip TIFF with any declared size."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits),
               (259, 3, 1, compression), (262, 3, 1, photometric), (273, 4, 1, 0),
               (277, 3, 1, samples), (278, 4, 1, height), (279, 4, 1, len(strip))]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_offset
        fmt = "<HHIHH" if typ == 3 else "<HHII"
        ifd += struct.pack(fmt, tag, typ, count, value, 0) if typ == 3 else \
            struct.pack(fmt, tag, typ, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + strip


# --------------------------------------------------------------------------- item 15: bombs


def test_png16_zlib_bomb_costs_only_the_declared_size(tmp_path):
    """16 x 16 16-bit RGB declared, 256 MiB of zeros deflated behind it."""
    idat = _zeros_deflated(256 << 20)
    path = tmp_path / "bomb16.png"
    path.write_bytes(_png(16, 16, 16, 2, idat))
    assert path.stat().st_size < 1 << 20
    out = _read(path)
    assert out["ok"] and out["shape"] == [16, 16, 3] and out["dtype"] == "uint16", out


def test_builtin_png_codec_inflates_to_the_declared_size_only():
    import tracemalloc

    data = _png(16, 16, 16, 2, _zeros_deflated(64 << 20))
    tracemalloc.start()
    try:
        array, _ = imf._decode_png(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert array.shape == (16, 16, 3) and not array.any()
    assert peak < len(data) + (4 << 20), peak  # not the 64 MiB the data expands to


def test_builtin_png_codec_checks_the_pixel_limit_first():
    data = _png(1 << 15, 1 << 15, 16, 2, zlib.compress(b""))
    with pytest.raises(imf.ImageFileError, match="more than the limit"):
        imf._decode_png(data)
    with pytest.raises(imf.ImageFileError, match="more than the limit of 100"):
        imf._decode_png(_png(11, 10, 16, 2, zlib.compress(b"")), max_pixels=100)


def test_png_icc_bomb_is_not_inflated():
    icc = b"ICC profile\x00\x00" + _zeros_deflated(64 << 20)
    data = _png(2, 2, 16, 2, zlib.compress(bytes(2 * 13)), extra=_chunk(b"iCCP", icc))
    array, info = imf._decode_png(data)
    assert array.shape == (2, 2, 3) and "icc_profile" not in info


def test_tiff_declaring_20000_squared_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.tif"
    path.write_bytes(_tiff(20000, 20000, strip=_zeros_deflated(64 << 10)))
    msg = _refused(path, "declares 400000000 pixels", "more than the limit of 268435456")
    assert "--max-pixels" in msg


def test_tiff_deflate_strip_bomb_is_refused(tmp_path):
    """A 64 x 64 image whose one strip inflates to 256 MiB."""
    path = tmp_path / "strip.tif"
    path.write_bytes(_tiff(64, 64, strip=_zeros_deflated(256 << 20)))
    assert path.stat().st_size < 1 << 20
    _refused(path, "inflates beyond its declared size")


def test_valid_deflate_tiff_still_reads(tmp_path):
    a = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    tifffile.imwrite(tmp_path / "ok.tif", a, compression="zlib", rowsperstrip=7)
    b, _ = imf.read_image(tmp_path / "ok.tif")
    np.testing.assert_array_equal(a, b)
    path = tmp_path / "own.tif"
    path.write_bytes(_tiff(80, 64, strip=zlib.compress(a.astype("<u2").tobytes())))
    np.testing.assert_array_equal(imf.read_image(path)[0], a)


@pytest.mark.parametrize("h, w, filters", [(1, 200000, [4]), (2, 100000, [0, 4]),
                                           (1, 200000, [3]), (3, 60000, [3, 4, 3])])
def test_thin_png16_with_paeth_or_average_decodes_fast(tmp_path, h, w, filters):
    a = (np.random.default_rng(h).integers(0, 65536, (h, w, 3))).astype(np.uint16)
    path = tmp_path / "thin.png"
    path.write_bytes(_png_array(a, filters))
    out = _read(path)  # the old decoder: one numpy step per anti-diagonal, 21 s
    assert out["ok"] and out["shape"] == [h, w, 3] and out["max"] == int(a.max()), out
    np.testing.assert_array_equal(imf.read_image(path)[0], a)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 0, 3, 1, 2]])
def test_png16_all_filters_and_layouts_read_exactly(tmp_path, channels, filters):
    rng = np.random.default_rng(channels)
    shape = (9, 11) if channels == 1 else (9, 11, channels)
    a = rng.integers(0, 65536, shape).astype(np.uint16)
    path = tmp_path / "x.png"
    path.write_bytes(_png_array(a, filters))
    b, meta = imf.read_image(path)
    assert b.dtype == np.uint16 and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    assert meta.kind == {1: "gray", 2: "gray+alpha", 3: "rgb", 4: "rgba"}[channels]
    np.testing.assert_array_equal(imf._decode_png(path.read_bytes())[0], a)  # fallback too


def test_interlaced_png16_reads_exactly(tmp_path):
    a = np.random.default_rng(7).integers(0, 65536, (13, 17, 3)).astype(np.uint16)
    # Adam7 written by an independent encoder? Pillow cannot write 16-bit RGB; build it
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2),
              (0, 1, 2, 2), (1, 0, 2, 1)]  # (y0, x0, dy, dx)
    stream = b""
    for y0, x0, dy, dx in passes:
        sub = a[y0::dy, x0::dx]
        if sub.size:
            raw = np.ascontiguousarray(sub, ">u2").view(np.uint8).reshape(sub.shape[0], -1)
            stream += _filter_rows(raw, 6, [4, 1])
    ihdr = struct.pack(">IIBBBBB", 17, 13, 16, 2, 0, 0, 1)
    path = tmp_path / "adam7.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
                     + _chunk(b"IDAT", zlib.compress(stream)) + _chunk(b"IEND", b""))
    np.testing.assert_array_equal(imf.read_image(path)[0], a)


def test_pixel_limit_applies_to_every_reader(tmp_path):
    a8 = np.zeros((40, 30, 3), np.uint8)
    imageio.imwrite(tmp_path / "a.png", a8)
    imageio.imwrite(tmp_path / "a.jpg", a8)
    imf.write_image(tmp_path / "b.png", a8.astype(np.uint16))
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((3, 40, 30), np.uint16),
                     photometric="minisblack", metadata=None)  # 3 pages
    for name, pixels in [("a.png", 1200), ("a.jpg", 1200), ("b.png", 1200), ("a.tif", 3600)]:
        with pytest.raises(imf.ImageFileError, match=f"declares {pixels} pixels"):
            imf.read_image(tmp_path / name, max_pixels=pixels - 1)
        assert imf.read_image(tmp_path / name, max_pixels=pixels)[0].size >= pixels


def test_pillow_limit_follows_ours_and_is_restored(tmp_path):
    """Pillow refuses > 2 x MAX_IMAGE_PIXELS by itself; our (higher) limit wins for our
    reads, and Pillow's global is left as it was."""
    imageio.imwrite(tmp_path / "a.png", np.zeros((40, 30), np.uint8))
    saved = PIL_Image.MAX_IMAGE_PIXELS
    PIL_Image.MAX_IMAGE_PIXELS = 100  # Pillow alone would refuse 1200 pixels
    try:
        assert imf.read_image(tmp_path / "a.png")[0].shape == (40, 30)
        assert PIL_Image.MAX_IMAGE_PIXELS == 100
    finally:
        PIL_Image.MAX_IMAGE_PIXELS = saved


def test_many_samples_count_against_the_limit(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((10, 10, 40), np.uint8),
                     photometric="minisblack", planarconfig="contig")
    with pytest.raises(imf.ImageFileError, match="samples"):
        imf.read_image(tmp_path / "m.tif", max_pixels=100)
    assert imf.read_image(tmp_path / "m.tif", max_pixels=1000)[0].shape == (10, 10, 40)


# --------------------------------------------------------------------------- item 16: alpha


def test_palette_png_with_transparency_keeps_alpha(tmp_path):
    im = PIL_Image.new("P", (4, 3))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    im.putdata([0, 1, 2, 1] * 3)
    im.save(tmp_path / "p.png", transparency=bytes([0, 128, 255]))
    a, meta = imf.read_image(tmp_path / "p.png")
    assert a.shape == (3, 4, 4) and meta.kind == "rgba"
    np.testing.assert_array_equal(a[0, :, 3], [0, 128, 255, 128])
    np.testing.assert_array_equal(a[0, 0, :3], [255, 0, 0])
    im.save(tmp_path / "opaque.png")  # no tRNS: plain RGB
    b, meta = imf.read_image(tmp_path / "opaque.png")
    assert b.shape == (3, 4, 3) and meta.kind == "rgb"


@pytest.mark.parametrize("mode, key, expected_kind", [("RGB", (1, 2, 3), "rgba"),
                                                      ("L", 7, "gray+alpha")])
def test_colour_key_transparency_keeps_alpha(tmp_path, mode, key, expected_kind):
    values = np.full((2, 3, 3) if mode == "RGB" else (2, 3), 9, np.uint8)
    values[0, 0] = key
    PIL_Image.fromarray(values, mode).save(tmp_path / "k.png", transparency=key)
    a, meta = imf.read_image(tmp_path / "k.png")
    assert meta.kind == expected_kind
    assert a[0, 0, -1] == 0 and a[1, 1, -1] == 255


# --------------------------------------------------------------------------- item 17: outputs


@pytest.mark.parametrize("name, array", [
    ("a.tif", np.zeros((4, 4), np.uint16)), ("a.png", np.zeros((4, 4, 3), np.uint16)),
    ("b.png", np.zeros((4, 4), np.uint8)), ("c.jpg", np.zeros((8, 8, 3), np.uint8)),
])
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_new_output_gets_the_umask_mode(tmp_path, name, array, umask):
    old = os.umask(umask)
    try:
        imf.write_image(tmp_path / name, array)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o664])
def test_overwritten_output_keeps_its_mode(tmp_path, mode):
    target = tmp_path / "x.tif"
    target.write_bytes(b"old")
    os.chmod(target, mode)
    old = os.umask(0o077)
    try:
        imf.write_image(target, np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(target).st_mode) == mode
    assert tifffile.imread(target).shape == (4, 4)
    assert sorted(os.listdir(tmp_path)) == ["x.tif"]


_SLOW_WRITE = r"""
import sys, time
from msrnet_napari import cli, image_files as imf

def slow_write(tmp, array, meta):
    with open(tmp, "wb") as fh:
        fh.write(b"partial data")
    print("WRITING", flush=True)
    time.sleep(120)

imf._write_tiff = slow_write
class Cancelled(Exception):
    pass

cli._load_api = lambda: ((lambda a, return_decision=False, **k: (a, None) if return_decision
                          else a), Cancelled)
cli._resolve_weights = lambda *a, **k: None
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX")
@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 128 + 15)])
def test_sigterm_mid_write_leaves_no_partial_file(tmp_path, sig, status):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.full((8, 8), 5, np.uint16))
    outdir = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, str(src), "-o", str(outdir),
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    with proc:  # closes the pipes
        try:
            line = proc.stdout.readline()
            assert line.strip() == "WRITING", (line, proc.stderr.read() if proc.poll() else "")
            parts = [p for p in os.listdir(outdir) if p.endswith(".part")]
            assert len(parts) == 1 and parts[0].startswith(".in_msrnet.tif.")
            proc.send_signal(sig)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = proc.stderr.read()
    assert proc.returncode == status, err
    assert os.listdir(outdir) == []
    assert "terminated" in err


def test_remove_partial_files_removes_only_writes_in_progress(tmp_path):
    seen = {}

    def fake(tmp, array, meta):
        seen["tmp"] = tmp
        assert os.path.exists(tmp) and tmp in imf._PARTIAL
        imf.remove_partial_files()  # what the SIGTERM handler does
        assert not os.path.exists(tmp)
        raise KeyboardInterrupt

    real = imf._write_tiff
    imf._write_tiff = fake
    try:
        with pytest.raises(KeyboardInterrupt):
            imf.write_image(tmp_path / "x.tif", np.zeros((2, 2), np.uint8))
    finally:
        imf._write_tiff = real
    assert os.listdir(tmp_path) == [] and not imf._PARTIAL
    imf.write_image(tmp_path / "y.tif", np.zeros((2, 2), np.uint8))
    imf.remove_partial_files()
    assert os.listdir(tmp_path) == ["y.tif"]


# --------------------------------------------------------------------------- item 18: CLI


@pytest.mark.parametrize("option, value", [
    ("--threads", "1000000"), ("--threads", "1025"), ("--threads", "-1"),
    ("--tile", str(2**31)), ("--tile", "65537"), ("--tile", "-5"),
    ("--max-pixels", "0"), ("--bit-depth", "1000000"), ("--threads", "1" * 5000),
])
def test_out_of_range_numbers_are_usage_errors(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and option in err
    assert len(err) < 2000


def test_limits_match_enhance():
    import importlib

    enh = importlib.import_module("msrnet_napari.enhance")

    parser = cli.build_parser()
    assert parser.parse_args(["a", "-o", "o", "--threads", str(enh.MAX_THREADS)]).threads \
        == enh.MAX_THREADS
    assert parser.parse_args(["a", "-o", "o", "--tile", str(enh.MAX_TILE)]).tile \
        == enh.MAX_TILE
    assert parser.parse_args(["a", "-o", "o"]).max_pixels == imf.DEFAULT_MAX_PIXELS \
        == DEFAULT_MAX_PIXELS


def _symlink(link: Path, target: Path) -> None:
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError):
        pytest.skip("cannot create symlinks here")


def test_dangling_symlink_input_says_so(tmp_path, capsys):
    link = tmp_path / "in.png"
    _symlink(link, tmp_path / "gone.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    _symlink(folder / "f.tif", tmp_path / "gone.tif")
    assert cli.main([str(link), str(folder), "-o", str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{link}: dangling symlink" in err and "gone.png" in err
    assert f"{folder / 'f.tif'}: dangling symlink" in err and "gone.tif" in err
    with pytest.raises(FileNotFoundError, match="dangling symlink"):
        imf.read_image(link)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_input_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "in.png"
    os.mkfifo(fifo)
    out = _read(fifo, timeout=30)
    assert not out["ok"] and out["type"] == "ImageFileError", out
    assert "FIFO" in out["error"] and "not a regular file" in out["error"], out


def test_weights_option_names_the_problem(tmp_path, capsys):
    link = tmp_path / "w.pt"
    _symlink(link, tmp_path / "gone.pt")
    cases = [(link, "dangling symlink"), (tmp_path, "a directory, not a regular file"),
             (tmp_path / "missing.pt", "No such file")]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.pt")
        cases.append((tmp_path / "fifo.pt", "FIFO"))
    for weights, fragment in cases:
        with pytest.raises(SystemExit) as exc:
            cli.main([str(tmp_path / "a.png"), "-o", str(tmp_path / "o"),
                      "--weights", str(weights)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--weights" in err and fragment in err, err


# --------------------------------------------------------------------------- item 1: engine


_ENGINE_THREADS = r"""
import numpy as np
from msrnet_napari import _core
from msrnet_napari.config import MSRNetConfig, parameter_shapes
cfg = MSRNetConfig(depth=1, width=2, f1_width=1)
w = {k: np.zeros(s, np.float32) for k, s in parameter_shapes(cfg).items()}
eng = _core.Engine(cfg.engine_dict(), w)
img = np.zeros((8, 8, 3), np.float32)
for threads in (100000, 1025, 2**31 - 1, -1):
    try:
        eng.run(img, tile=8, threads=threads)
        print("ran", threads)
    except ValueError as exc:
        assert "threads" in str(exc), exc
        print("refused", threads)
print("ok", eng.run(img, tile=8, threads=1024).shape)
for key, value in (("width", 257), ("depth", 65), ("f1_width", 65)):
    d = cfg.engine_dict()
    d[key] = value
    try:
        _core.Engine(d, w)
        print("built", key)
    except ValueError as exc:
        print("refused", key)
"""


def test_engine_threads_are_bounded():
    pytest.importorskip("msrnet_napari._core", reason="compiled engine not built")
    res = subprocess.run([sys.executable, "-c", _ENGINE_THREADS], capture_output=True,
                         text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]  # libgomp used to abort the process
    lines = res.stdout.split("\n")
    for threads in (100000, 1025, 2**31 - 1, -1):
        assert f"refused {threads}" in lines, res.stdout
    assert "ok (8, 8, 3)" in lines
    for key in ("width", "depth", "f1_width"):  # the engine's limits are config.MAX_*
        assert f"refused {key}" in lines, res.stdout


def test_directory_named_like_an_image_is_refused(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(imf.ImageFileError, match="is a directory, not a regular file"):
        imf.read_image(tmp_path / "d.png")
    with pytest.raises(FileNotFoundError, match="no such file"):
        imf.read_image(tmp_path / "missing.png")
