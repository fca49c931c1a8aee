"""FITS images: the built-in codec (fits_io), read_image / write_image, the CLI and the
napari reader. Files are built card by card here, as a foreign FITS writer would."""

from __future__ import annotations

import io

import numpy as np
import pytest

from msrnet_napari import fits_io
from msrnet_napari._reader import get_reader, read_fits_layers
from msrnet_napari.config import MSRNetConfig
from msrnet_napari.image_files import (
    ImageFileError,
    _guess_meta,
    check_writable,
    read_image,
    write_image,
)

from conftest import cli_checkpoint


def card(key: str, value: str = "", comment: str = "") -> bytes:
    if not value:
        return f"{key:<80}".encode("ascii")
    value = f"{value:<20}" if value.startswith("'") else f"{value:>20}"  # fixed format
    text = f"{key:<8}= {value}" + (f" / {comment}" if comment else "")
    return f"{text:<80}"[:80].encode("ascii")


def header(*cards: bytes) -> bytes:
    raw = b"".join(cards) + card("END")
    return raw + b" " * (-len(raw) % 2880)


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 2880)


def primary(array: np.ndarray, bitpix: int, *extra: bytes, extend: bool = False) -> bytes:
    dims = [card(f"NAXIS{i}", str(n)) for i, n in enumerate(reversed(array.shape), 1)]
    head = [card("SIMPLE", "T"), card("BITPIX", str(bitpix)), card("NAXIS", str(array.ndim)),
            *dims]
    if extend:
        head.append(card("EXTEND", "T"))
    return header(*head, *extra) + padded(array.tobytes())


def read(data: bytes, max_pixels: int = 1 << 28):
    return fits_io.read_fits(io.BytesIO(data), max_pixels)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32,
                                   np.int64, np.uint64, np.float32, np.float64])
def test_every_dtype_round_trips_exactly(dtype):
    if np.dtype(dtype).kind in "iu":
        lim = np.iinfo(dtype)
        x = np.array([[lim.min, lim.max, 0], [1, lim.max - 1, lim.min + 1]], dtype=dtype)
    else:
        x = np.array([[-1.5, 3e30, 0.0], [np.pi, -0.0, 1e-30]], dtype=dtype)
    y, info = read(fits_io.encode_fits(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    assert not info.scaled


def test_axes_order_and_stacks():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    data = fits_io.encode_fits(x)
    text = data[:2880].decode("ascii")
    assert "NAXIS1  =                    5" in text and "NAXIS4  =                    2" in text
    y, _ = read(data)
    np.testing.assert_array_equal(y, x)


def test_unsigned_convention_of_a_foreign_file():
    stored = np.array([[-32768, -1], [0, 32767]], dtype=">i2")
    data = primary(stored, 16, card("BSCALE", "1"), card("BZERO", "32768"))
    y, info = read(data)
    assert y.dtype == np.uint16 and not info.scaled
    np.testing.assert_array_equal(y, [[0, 32767], [32768, 65535]])


def test_other_scaling_gives_physical_floats_written_back_as_floats(tmp_path):
    stored = np.array([[0, 1], [-3, 100]], dtype=">i2")
    src = tmp_path / "scaled.fits"
    src.write_bytes(primary(stored, 16, card("BSCALE", "0.5"), card("BZERO", "10.0"),
                            card("BUNIT", "'ADU     '")))
    y, meta = read_image(src)
    assert y.dtype == np.float32 and meta.info["fits"].scaled
    np.testing.assert_array_equal(y, [[10.0, 10.5], [8.5, 60.0]])
    out = write_image(tmp_path / "out.fits", y, meta)
    z, zmeta = read_image(out)
    np.testing.assert_array_equal(z, y)
    text = out.read_bytes()[:2880].decode("ascii")
    assert "BITPIX  =                  -32" in text and "BSCALE" not in text
    assert "BUNIT   = 'ADU     '" in text


def test_blank_pixels_become_nan_and_stay_missing(tmp_path):
    stored = np.array([[-32768, 5], [7, -32768]], dtype=">i2")
    y, info = read(primary(stored, 16, card("BLANK", "-32768")))
    assert y.dtype == np.float32 and info.scaled
    np.testing.assert_array_equal(y, [[np.nan, 5], [7, np.nan]])
    z, _ = read(fits_io.encode_fits(y, info))  # written back as floats, NaN kept
    np.testing.assert_array_equal(z, y)
    plain, _ = read(primary(np.array([[1, 2]], ">i2"), 16, card("BLANK", "-32768")))
    assert plain.dtype == np.int16  # no blank pixel: the integers stay


def test_header_cards_kept_checksums_dropped_history_added(tmp_path):
    x = np.array([[1, 2], [3, 4]], dtype=">i2")
    src = tmp_path / "a.fits"
    src.write_bytes(primary(x, 16, card("OBJECT", "'O''Brien field'"),
                            card("CRVAL1", "85.25", "RA of the reference pixel"),
                            card("CHECKSUM", "'abc     '"), card("DATASUM", "'123     '"),
                            b"COMMENT   keep this comment".ljust(80)))
    y, meta = read_image(src)
    meta.info["history"] = "model microscopy (linear intensities): dark 86 (auto), scale " \
                           "1115.71; gain 1; and a long tail that needs a second card"
    out = write_image(tmp_path / "b.fits", y.astype(np.uint16), meta)
    _, back = read_image(out)
    cards = [c.rstrip() for c in back.info["fits"].cards]
    assert "OBJECT  = 'O''Brien field'" in cards
    assert any(c.startswith("CRVAL1  =                85.25 / RA of") for c in cards)
    assert "COMMENT   keep this comment" in cards
    assert not any(c.startswith(("CHECKSUM", "DATASUM")) for c in cards)
    history = [c[8:] for c in cards if c.startswith("HISTORY")]
    assert history[0].startswith("msrnet-napari") and len(history) >= 3
    assert " ".join(h.strip() for h in history[1:]).endswith("needs a second card")
    assert all(len(c) <= 80 for c in cards)
    assert any(c.startswith("BZERO   =                32768") for c in cards)  # uint16


def test_image_extension_and_other_hdus_are_kept_byte_for_byte(tmp_path):
    empty = header(card("SIMPLE", "T"), card("BITPIX", "8"), card("NAXIS", "0"),
                   card("EXTEND", "T"))
    img = np.array([[5, 6, 7], [8, 9, 10]], dtype=">f4")
    ext = header(card("XTENSION", "'IMAGE   '"), card("BITPIX", "-32"), card("NAXIS", "2"),
                 card("NAXIS1", "3"), card("NAXIS2", "2"), card("PCOUNT", "0"),
                 card("GCOUNT", "1"), card("EXTNAME", "'SCI     '")) + padded(img.tobytes())
    table = header(card("XTENSION", "'BINTABLE'"), card("BITPIX", "8"), card("NAXIS", "2"),
                   card("NAXIS1", "4"), card("NAXIS2", "2"), card("PCOUNT", "0"),
                   card("GCOUNT", "1"), card("TFIELDS", "1"), card("TFORM1", "'J       '")) \
        + padded(np.array([1, 2], ">i4").tobytes())
    src = tmp_path / "mef.fits"
    src.write_bytes(empty + ext + table)
    y, meta = read_image(src)
    info = meta.info["fits"]
    assert info.extension and info.before == empty and info.after == table
    np.testing.assert_array_equal(y, img)
    out = write_image(tmp_path / "out.fits", y * 2, meta).read_bytes()
    assert out.startswith(empty) and out.endswith(table)
    z, zmeta = read_image(tmp_path / "out.fits")
    np.testing.assert_array_equal(z, img * 2)
    assert "EXTNAME = 'SCI     '" in [c.rstrip() for c in zmeta.info["fits"].cards]


@pytest.mark.parametrize("data, message", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 3000, "not a FITS file"),
    (header(card("SIMPLE", "F"), card("BITPIX", "16"), card("NAXIS", "0")), "SIMPLE = F"),
    (header(card("SIMPLE", "T"), card("BITPIX", "12"), card("NAXIS", "2"), card("NAXIS1", "2"),
            card("NAXIS2", "2")), "BITPIX 12"),
    (header(card("SIMPLE", "T"), card("BITPIX", "16"), card("NAXIS", "2"), card("NAXIS1", "-2"),
            card("NAXIS2", "2")), "out of range"),
    (header(card("SIMPLE", "T"), card("BITPIX", "16"), card("NAXIS", "2"), card("NAXIS1", "2"),
            card("NAXIS2", "2")) + b"\0" * 3, "truncated"),
    (header(card("SIMPLE", "T"), card("BITPIX", "16"), card("NAXIS", "0")), "without an image"),
    (card("SIMPLE", "T") + b" " * 2800, "truncated FITS header"),
    (header(card("SIMPLE", "T"), card("BITPIX", "8"), card("NAXIS", "0"))
     + header(card("XTENSION", "'BINTABLE'"), card("BITPIX", "8"), card("NAXIS", "2"),
              card("NAXIS1", "8"), card("NAXIS2", "1"), card("PCOUNT", "0"), card("GCOUNT", "1"),
              card("ZIMAGE", "T")) + padded(b"\0" * 8), "tile-compressed"),
])
def test_bad_files_fail_clearly(data, message):
    with pytest.raises(fits_io.FitsError, match=message):
        read(data)


def test_header_without_end_is_bounded():
    data = card("SIMPLE", "T") + b" " * (2880 * (fits_io.MAX_HEADER_BLOCKS + 5) - 80)
    with pytest.raises(fits_io.FitsError, match="no END card"):
        read(data)


def test_pixel_limit_before_reading(tmp_path):
    src = tmp_path / "huge.fits"  # declares 2**40 pixels and holds none of them
    src.write_bytes(header(card("SIMPLE", "T"), card("BITPIX", "16"), card("NAXIS", "2"),
                           card("NAXIS1", str(1 << 20)), card("NAXIS2", str(1 << 20))))
    with pytest.raises(ImageFileError, match="more than the limit"):
        read_image(src)


def test_write_checks():
    meta_rgb = _guess_meta((4, 4, 3))
    with pytest.raises(ImageFileError, match="gray images"):
        check_writable("x.fits", (4, 4, 3), np.uint8, meta_rgb)
    with pytest.raises(ImageFileError, match="cannot store bool"):
        check_writable("x.fits", (4, 4), np.bool_)
    check_writable("x.fits", (3, 16, 16), np.float32)


@pytest.fixture
def linear_args(tmp_path, monkeypatch):
    """CLI arguments naming a small random linear model."""
    pytest.importorskip("msrnet_napari._core")
    return cli_checkpoint(MSRNetConfig(depth=2, width=8, intensity="linear"), 1, tmp_path,
                          monkeypatch)[0]


def test_cli_fits_in_fits_out(tmp_path, linear_args):
    from msrnet_napari import cli

    rng = np.random.default_rng(0)
    counts = (100 + rng.poisson(20, (64, 80))).astype(">i2")
    src = tmp_path / "plate.fits"
    src.write_bytes(primary(counts, 16, card("OBJECT", "'M51     '")))
    rc = cli.main([str(src), "-o", str(tmp_path / "out"), *linear_args, "--threads", "1"])
    assert rc == 0
    y, meta = read_image(tmp_path / "out" / "plate_msrnet.fits")
    assert y.dtype == np.int16 and y.shape == counts.shape
    cards = [c.rstrip() for c in meta.info["fits"].cards]
    assert "OBJECT  = 'M51     '" in cards
    history = " ".join(c[8:].strip() for c in cards if c.startswith("HISTORY"))
    assert "msrnet-napari" in history and "dark" in history  # the decision line


def test_cli_format_fits_from_tiff(tmp_path, linear_args):
    tifffile = pytest.importorskip("tifffile")
    from msrnet_napari import cli

    x = (np.random.default_rng(1).random((2, 40, 48)) * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", x)
    rc = cli.main([str(tmp_path / "stack.tif"), "-o", str(tmp_path / "out"), *linear_args,
                   "--threads", "1", "--quiet", "--format", "fits"])
    assert rc == 0
    y, _ = read_image(tmp_path / "out" / "stack_msrnet.fits")
    assert y.dtype == np.uint16 and y.shape == x.shape


def test_napari_reader(tmp_path):
    x = np.arange(12, dtype=">f4").reshape(3, 4)
    src = tmp_path / "img.FITS"
    src.write_bytes(primary(x, -32, card("OBJECT", "'HH      '")))
    assert get_reader(str(tmp_path / "a.png")) is None
    assert get_reader([str(src), str(tmp_path / "b.tif")]) is None
    reader = get_reader(str(src))
    assert reader is read_fits_layers
    [(data, kwargs, kind)] = reader(str(src))
    assert kind == "image" and kwargs["name"] == "img"
    np.testing.assert_array_equal(data, x)
    assert "OBJECT  = 'HH      '" in kwargs["metadata"]["fits_header"]


def test_napari_writer_keeps_the_header_and_adds_the_decision(tmp_path):
    from msrnet_napari._writer import write_fits

    x = np.arange(20, dtype=">i2").reshape(4, 5)
    src = tmp_path / "src.fits"
    src.write_bytes(primary(x, 16, card("CTYPE1", "'RA---TAN'"), card("CRPIX1", "2.5")))
    [(data, kwargs, _)] = read_fits_layers(str(src))
    # what the widget's result layer carries: the source's header and the decision
    attributes = {"rgb": False, "metadata": {
        "fits_header": kwargs["metadata"]["fits_header"],
        "msrnet": {"decision": "model microscopy (linear intensities): dark 3 (auto)"}}}
    [path] = write_fits(str(tmp_path / "out.fits"), data.astype(np.float32) * 2, attributes)
    y, meta = read_image(path)
    np.testing.assert_array_equal(y, x * 2)
    cards = [c.rstrip() for c in meta.info["fits"].cards]
    assert "CTYPE1  = 'RA---TAN'" in cards and any(c.startswith("CRPIX1") for c in cards)
    assert any("dark 3 (auto)" in c for c in cards if c.startswith("HISTORY"))
    with pytest.raises(ValueError, match="not RGB"):
        write_fits(str(tmp_path / "rgb.fits"), np.zeros((4, 4, 3), np.uint8), {"rgb": True})
    write_fits(str(tmp_path / "plain.fits"), np.ones((3, 3), np.uint8), {})  # no header: fine
    assert read_image(tmp_path / "plain.fits")[0].dtype == np.uint8
