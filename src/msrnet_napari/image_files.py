"""Reading and writing image files for ``msrnet-enhance`` (no torch, no napari).

``read_image(path) -> (array, ImageMeta)`` and ``write_image(path, array, meta)``.

Supported formats, chosen by file extension:

* PNG (``.png``): read with Pillow, 8 and 16 bits (Pillow turns 16-bit colour
  into 8 bits, so those are decoded by Pillow twice, high and low bytes, or by a
  small built-in codec if that ever fails its self-check); written with
  imageio/Pillow (8-bit) or the built-in codec (16-bit). Gray, gray+alpha, RGB,
  RGBA; palette images are read as RGB, or RGBA when they have transparency
  (tRNS), like gray/RGB images with a transparent colour key.
* JPEG (``.jpg``, ``.jpeg``): 8-bit gray or RGB (CMYK is converted to RGB).
  Written with quality 95: JPEG is lossy, so use ``--format png``/``tif`` for
  a lossless result. EXIF (orientation included) and ICC profiles are kept.
* TIFF (``.tif``, ``.tiff``) through tifffile: any page count (all pages must
  share shape and dtype; they are returned stacked along a new first axis),
  uint8/uint16/float/... dtypes, gray, RGB(A), gray+alpha, multi-sample,
  contiguous or planar. Photometric interpretation, planar configuration,
  extra samples, resolution, ICC profile and the image description are kept;
  compressed input is written deflate-compressed (LZW, JPEG... need the
  ``imagecodecs`` package to be read at all).
* FITS (``.fits``, ``.fit``, ``.fts``; astronomy) with the built-in codec of
  :mod:`msrnet_napari.fits_io` (no dependency): the primary image (or the first
  IMAGE extension) in its physical units - integer data with the unsigned
  convention as uint16/uint32, other ``BSCALE``/``BZERO`` scaling as floats - gray
  or a stack of planes (``NAXIS3``...). Written back with every header card of
  the source (WCS and the rest), a ``HISTORY`` card, and the file's other HDUs
  copied unchanged.

The array layout is described by :class:`ImageMeta`: ``channel_axis`` is the
axis of the samples of a pixel (-1 for PNG/JPEG/contiguous TIFF, -3 for planar
TIFF) or None for single-sample (gray) data, ``kind`` says what the samples are.

Hostile files (docs/SECURITY.md): every reader checks the declared size
against a pixel limit (``max_pixels``, default ``DEFAULT_MAX_PIXELS`` = 2**28
pixels over all pages, and at most 4 samples per pixel on average) *before*
decoding; zlib data is inflated with bounded streaming decompressors (PNG image
data by Pillow, the built-in codec and its iCCP chunk to their declared size,
TIFF deflate segments are checked against their declared size before tifffile
decodes them); only regular files are opened (a FIFO would block), with a
dangling symlink named as such.

Writes are atomic: data goes to a hidden temporary file in the destination
folder that is renamed over ``path`` only once complete, so an interrupted or
failed write never leaves a partial file behind (and
:func:`remove_partial_files`, called by the CLI's SIGTERM handler, deletes the
one being written). The result gets the mode of the file it replaces, or that
of a new file (0666 & ~umask).

imageio and tifffile are imported on first use; without them
:class:`MissingDependencyError` explains how to install the ``io`` extra.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import struct
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ._safe_open import open_regular
from .fits_io import FITS_EXTENSIONS

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageFileError",
    "ImageMeta",
    "MissingDependencyError",
    "format_for_path",
    "check_writable",
    "read_image",
    "remove_partial_files",
    "require_io",
    "write_image",
]

IMAGE_EXTENSIONS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    **{ext: "fits" for ext in FITS_EXTENSIONS},
}

JPEG_QUALITY = 95

#: pixels (height x width x pages) an image may have, unless the caller raises it
#: (msrnet-enhance --max-pixels); checked against the declared size before decoding
DEFAULT_MAX_PIXELS = 1 << 28
MAX_ICC_BYTES = 4 * 1024**2  # an ICC profile is a few kB

_INSTALL_HINT = "install it with: pip install 'msrnet-napari[io]'"


class MissingDependencyError(ImportError):
    """imageio / tifffile (the ``io`` extra) is not installed."""


class ImageFileError(ValueError):
    """The file cannot be read or written: corrupt, unsupported or incompatible."""


@dataclass
class ImageMeta:
    """What :func:`write_image` needs to write an array back like its source.

    format: "png", "jpeg", "tiff" or "fits".
    kind: "gray", "gray+alpha", "rgb", "rgba" or "multichannel" (samples that
        are neither colour nor alpha, e.g. a 5-sample minisblack TIFF).
    channel_axis: axis of the samples in the array (negative), None for gray.
    pages: number of TIFF pages (1 for PNG/JPEG); with pages > 1 the array has
        a leading page axis.
    info: format-specific extras (ICC profile, dpi, EXIF, TIFF tags...).
    """

    format: str
    kind: str
    channel_axis: Optional[int]
    pages: int = 1
    info: dict = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return {"gray": 1, "gray+alpha": 2, "rgb": 3, "rgba": 4}.get(self.kind, 0)


def format_for_path(path: str | os.PathLike[str]) -> str:
    """"png" / "jpeg" / "tiff" / "fits" from the extension; ImageFileError otherwise."""
    ext = Path(path).suffix.lower()
    try:
        return IMAGE_EXTENSIONS[ext]
    except KeyError:
        known = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ImageFileError(
            f"unsupported file type {ext or '(no extension)'!r}; supported: {known}"
        ) from None


def _imageio():
    try:
        import imageio.v3 as iio
    except ImportError as exc:
        raise MissingDependencyError(f"reading PNG/JPEG needs imageio; {_INSTALL_HINT}") from exc
    return iio


def _tifffile():
    try:
        import tifffile
    except ImportError as exc:
        raise MissingDependencyError(f"reading TIFF needs tifffile; {_INSTALL_HINT}") from exc
    return tifffile


def require_io() -> None:
    """Raise MissingDependencyError unless imageio and tifffile are importable."""
    _imageio()
    _tifffile()


# --------------------------------------------------------------------------- read

def read_image(path: str | os.PathLike[str], *,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageMeta]:
    """Read ``path`` into a numpy array and the metadata to write it back.

    Raises OSError when the file cannot be opened (FileNotFoundError names a
    dangling symlink as such), ImageFileError (a ValueError) when it is not a
    regular file, corrupt, not supported or larger than ``max_pixels`` pixels
    (all pages together; checked before anything is decoded),
    MissingDependencyError when the ``io`` extra is missing.
    """
    path = Path(path)
    fmt = format_for_path(path)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    with _open_regular(path) as fh:
        try:
            if fmt == "tiff":
                return _read_tiff(fh, path.name, max_pixels)
            if fmt == "fits":
                return _read_fits(fh, max_pixels)
            return _read_pillow(fh, fmt, max_pixels)
        except (MissingDependencyError, OSError, ImageFileError, MemoryError):
            raise
        except Exception as exc:  # the libraries raise anything for corrupt input
            raise ImageFileError(f"cannot read {fmt.upper()} file: {_clip(exc)}") from exc


def _clip(exc: Any, limit: int = 300) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _open_regular(path: Path):
    """Open for reading; anything but a regular file is refused before a byte is read."""
    return open_regular(path, lambda kind: ImageFileError(
        f"{path} is {kind}, not a regular file"), plain_missing=True)


def _check_pixels(pixels: int, samples: int, max_pixels: int, what: str) -> None:
    """ImageFileError if the declared image is larger than the limits allow."""
    if pixels > max_pixels:
        raise ImageFileError(
            f"{what} declares {pixels} pixels, more than the limit of {max_pixels} "
            f"(msrnet-enhance --max-pixels / read_image(max_pixels=) raise it)")
    if pixels * samples > 4 * max_pixels:
        raise ImageFileError(
            f"{what} declares {pixels} pixels x {samples} samples, more than 4 samples per "
            f"pixel of the {max_pixels}-pixel limit (--max-pixels raises it)")


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError(f"reading PNG/JPEG needs Pillow; {_INSTALL_HINT}") from exc
    return Image


_PILLOW_LOCK = threading.Lock()


_PILLOW_FORMATS = {"png": ["PNG"], "jpeg": ["JPEG", "MPO"]}


@contextmanager
def _pillow_opened(fh: Any, fmt: str, max_pixels: int) -> Iterator[Any]:
    """Pillow's Image.open of ``fh`` with its decompression-bomb limit set to ours
    (Pillow's own default refuses above 179M pixels and warns above 89M) and the
    declared size checked against ``max_pixels`` before anything is decoded."""
    Image = _pillow()
    with _PILLOW_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(fh, formats=_PILLOW_FORMATS[fmt])
        except Image.DecompressionBombError as exc:
            raise ImageFileError(f"{_clip(exc)} (--max-pixels raises the limit)") from None
        except Image.UnidentifiedImageError:  # an OSError: it is about the content
            raise ImageFileError(f"not a {fmt.upper()} file, or a corrupt one") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    try:
        width, height = im.size
        _check_pixels(width * height, max(1, len(im.getbands())), max_pixels,
                      f"{(im.format or 'image')} file")
        yield im
    finally:
        im.close()


def _check_png_chunks(data: bytes) -> None:
    """Every chunk's CRC up to IEND (Pillow does not check IDAT's: a flipped bit
    in stored image data would otherwise be a silently wrong pixel)."""
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise ImageFileError("truncated PNG file (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ImageFileError(f"truncated PNG file (in {ctype!r:.20} chunk)")
        crc = struct.unpack(">I", data[end - 4:end])[0]
        if crc != zlib.crc32(memoryview(data)[pos + 4:end - 4]) & 0xFFFFFFFF:
            raise ImageFileError(f"corrupt PNG file (CRC error in {ctype!r:.20} chunk)")
        if ctype == b"IEND":
            return
        pos = end


def _read_pillow(fh: Any, fmt: str, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    head = fh.read(33)
    fh.seek(0)
    if fmt == "png":
        import io

        if not head.startswith(_PNG_SIGNATURE):
            raise ImageFileError("not a PNG file (bad signature)")
        data = fh.read()
        _check_png_chunks(data)
        fh = io.BytesIO(data)
        if (len(head) == 33 and head[12:16] == b"IHDR" and head[24] == 16
                and head[25] in (2, 4, 6)):
            return _read_png16(fh, max_pixels)  # 16-bit colour: Pillow drops to 8 bits
    try:
        return _decode_pillow(fh, fmt, max_pixels)
    except OSError as exc:  # Pillow: "broken data stream", "image file is truncated"
        raise ImageFileError(f"corrupt {fmt.upper()} file ({_clip(exc)})") from None


def _decode_pillow(fh: Any, fmt: str, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    with _pillow_opened(fh, fmt, max_pixels) as im:
        mode = im.mode
        info = {k: im.info[k] for k in ("icc_profile", "exif", "dpi") if im.info.get(k)}
        transparent = "transparency" in im.info
        if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "1":
            im = im.convert("L")
        elif mode == "P":  # palette: keep the alpha of a tRNS chunk
            im = im.convert("RGBA" if transparent or im.palette.mode == "RGBA" else "RGB")
        elif mode == "PA":
            im = im.convert("RGBA")
        elif mode in ("L", "RGB") and transparent:  # a transparent colour key
            im = im.convert("LA" if mode == "L" else "RGBA")
        elif mode in ("I", "F") or (mode.startswith("I;") and mode not in ("I;16", "I;16B",
                                                                           "I;16L")):
            raise ImageFileError(f"unsupported Pillow image mode {mode!r}")
        else:
            im.load()
        array = np.asarray(im)
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    if mode.startswith("I;16") and transparent and array.ndim == 2:  # 16-bit colour key
        key = im.info.get("transparency")
        if isinstance(key, int):
            alpha = np.where(array == key, 0, 65535).astype(np.uint16)
            array = np.stack([array, alpha], axis=-1)
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageFileError(f"unexpected pixel type {array.dtype} in {fmt.upper()} file")
    return array, _meta_for_samples(fmt, array, info)


# 16-bit colour PNG through Pillow: its PNG decoder unfilters any bit depth in C, but
# keeps only the high byte of 16-bit RGB(A). Decoding once more with the little-endian
# raw mode keeps the low bytes instead; gray+alpha (4 bytes a pixel) is decoded as raw
# 8-bit RGBA, i.e. the four bytes as they are. Checked once against the built-in codec.
_PILLOW_16 = {"RGB;16B": ("RGB;16L",), "RGBA;16B": ("RGBA;16L",), "LA;16B": ()}
_pillow16_ok: Optional[bool] = None


def _pillow_png16(fh: Any, max_pixels: int) -> tuple[np.ndarray, dict]:
    import io

    data = fh.read()  # the compressed file, decoded twice (Pillow closes what it read)
    planes = []
    for variant in (0, 1):
        with _pillow_opened(io.BytesIO(data), "png", max_pixels) as im:
            tile = im.tile
            if (len(tile) != 1 or tile[0][0] != "zip" or not isinstance(tile[0][3], str)
                    or tile[0][3] not in _PILLOW_16):
                raise ImageFileError(f"unexpected Pillow PNG tile {tile!r:.200}")
            raw = tile[0][3]
            info = {k: im.info[k] for k in ("icc_profile", "exif", "dpi") if im.info.get(k)}
            if raw == "LA;16B":  # all four bytes in one decode
                im.tile = [_with_rawmode(tile[0], "RGBA")]
                im.load()
                bytes4 = np.asarray(im)
                array = bytes4.reshape(*bytes4.shape[:2], 2, 2).view(">u2")[..., 0]
                return array.astype(np.uint16), info
            if variant == 1:
                im.tile = [_with_rawmode(tile[0], _PILLOW_16[raw][0])]
            im.load()
            planes.append(np.asarray(im))
    high, low = planes
    return (high.astype(np.uint16) << 8) | low, info


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    if hasattr(tile, "_replace"):  # Pillow >= 11: a named tuple
        return tile._replace(args=rawmode)
    return (tile[0], tile[1], tile[2], rawmode)


def _pillow16_works() -> bool:
    global _pillow16_ok
    if _pillow16_ok is None:
        import io

        try:
            rng = np.random.default_rng(16)
            ok = True
            for channels in (2, 3, 4):
                a = rng.integers(0, 65536, (3, 5, channels)).astype(np.uint16)
                got, _ = _pillow_png16(io.BytesIO(_encode_png(a)), 10**6)
                ok = ok and got.shape == a.shape and np.array_equal(got, a)
        except Exception:
            ok = False
        _pillow16_ok = ok
    return _pillow16_ok


def _read_png16(fh: Any, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    if _pillow16_works():
        try:
            array, info = _pillow_png16(fh, max_pixels)
        except OSError as exc:
            raise ImageFileError(f"corrupt PNG file ({_clip(exc)})") from None
    else:  # pragma: no cover - only if a Pillow release changes its PNG internals
        array, info = _decode_png(fh.read(), max_pixels=max_pixels)
    return array, _meta_for_samples("png", array, info)


def _meta_for_samples(fmt: str, array: np.ndarray, info: dict) -> ImageMeta:
    if array.ndim == 2:
        return ImageMeta(fmt, "gray", None, 1, info)
    if array.ndim != 3 or array.shape[-1] not in (2, 3, 4):
        raise ImageFileError(f"unexpected image shape {array.shape}")
    kind = {2: "gray+alpha", 3: "rgb", 4: "rgba"}[array.shape[-1]]
    return ImageMeta(fmt, kind, -1, 1, info)


_TIFF_DEFLATE = (8, 32946, 50013)  # Adobe deflate, old deflate, PIXTIFF


def _pread(fh: Any, count: int, offset: int) -> bytes:
    if hasattr(os, "pread"):  # leaves the file position to tifffile
        return os.pread(fh.fileno(), count, offset)
    pos = fh.tell()
    try:
        fh.seek(offset)
        return fh.read(count)
    finally:
        fh.seek(pos)


def _check_deflate_segments(fh: Any, page: Any) -> None:
    """tifffile inflates a deflate segment with an unbounded zlib.decompress (without
    imagecodecs): inflate each one here first, at most to its declared size."""
    key = getattr(page, "keyframe", None) or page
    if int(key.compression) not in _TIFF_DEFLATE:
        return
    limit = int(np.prod(key.chunks, dtype=object)) * np.dtype(key.dtype).itemsize + 4096
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        if not count:
            continue
        data = _pread(fh, int(count), int(offset))
        inflate = zlib.decompressobj()
        try:
            inflate.decompress(data, limit + 1)
        except zlib.error:
            continue  # corrupt: tifffile reports it
        if inflate.unconsumed_tail:
            raise ImageFileError(f"TIFF deflate segment at offset {offset} inflates beyond "
                                 f"its declared size ({limit} bytes): decompression bomb")


def _read_tiff(fh: Any, name: str, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    tifffile = _tifffile()
    with tifffile.TiffFile(fh, name=name) as tif:
        pages = tif.pages
        n = len(pages)
        if n == 0:
            raise ImageFileError("TIFF file has no images")
        first = pages[0]
        key = getattr(first, "keyframe", first)
        photometric = int(key.photometric)
        if photometric == 3:
            raise ImageFileError("palette (indexed-colour) TIFF is not supported")
        if photometric not in (0, 1, 2):
            name = getattr(key.photometric, "name", str(photometric))
            raise ImageFileError(f"unsupported TIFF photometric interpretation {name}")
        shape, dtype = tuple(first.shape), np.dtype(first.dtype)
        planar = int(key.planarconfig) == 2 and key.samplesperpixel > 1
        if getattr(key, "imagedepth", 1) > 1:
            raise ImageFileError("volumetric (SGI image depth) TIFF is not supported")
        samples = max(1, int(key.samplesperpixel))
        pixels = int(np.prod(shape, dtype=object)) // samples  # declared, per page
        _check_pixels(pixels * n, samples, max_pixels,
                      f"TIFF file ({n} page{'s' * (n != 1)} of {shape})")
        for i, page in enumerate(pages):  # before allocating or decoding anything
            if tuple(page.shape) != shape or np.dtype(page.dtype) != dtype:
                raise ImageFileError(
                    f"TIFF pages differ (page 0: {shape} {dtype}, page {i}: "
                    f"{tuple(page.shape)} {page.dtype}); only uniform stacks are supported"
                )
        out = np.empty((n, *shape), dtype=dtype)
        for i, page in enumerate(pages):
            _check_deflate_segments(fh, page)
            out[i] = page.asarray()
        info = _tiff_info(key, photometric, planar)
    if photometric == 0:  # min-is-white: store as min-is-black so dark means dark
        if dtype.kind != "u":
            raise ImageFileError("min-is-white TIFF is supported for unsigned integers only")
        np.subtract(np.iinfo(dtype).max, out, out=out)
        info["photometric"] = "minisblack"
    samples = int(key.samplesperpixel)
    extras = tuple(int(e) for e in (key.extrasamples or ()))
    if samples == 1:
        kind, axis = "gray", None
    else:
        axis = -3 if planar else -1
        if photometric == 2 and samples == 3:
            kind = "rgb"
        elif photometric == 2 and samples == 4 and len(extras) == 1:
            kind = "rgba"
        elif photometric in (0, 1) and samples == 2 and len(extras) == 1 and extras[0] in (1, 2):
            kind = "gray+alpha"
        else:
            kind = "multichannel"
    array = out if n > 1 else out[0]
    if dtype.byteorder not in ("=", "|"):
        array = array.astype(dtype.newbyteorder("="))
    return array, ImageMeta("tiff", kind, axis, n, info)


def _tiff_info(page: Any, photometric: int, planar: bool) -> dict:
    info: dict[str, Any] = {
        "photometric": {0: "minisblack", 1: "minisblack", 2: "rgb"}[photometric],
        "planarconfig": "separate" if planar else "contig",
        "compressed": int(page.compression) != 1,
    }
    if page.extrasamples:
        info["extrasamples"] = tuple(int(e) for e in page.extrasamples)
    tags = page.tags
    xres, yres, unit = tags.get("XResolution"), tags.get("YResolution"), tags.get("ResolutionUnit")
    if xres is not None and yres is not None:
        info["resolution"] = (tuple(xres.value), tuple(yres.value))
        info["resolutionunit"] = int(unit.value) if unit is not None else 2
    icc = tags.get("InterColorProfile")
    if icc is not None and icc.value:
        info["icc_profile"] = bytes(icc.value)
    description = _portable_description(page.description or "")
    if description:
        info["description"] = description
    return info


def _portable_description(text: str) -> str:
    """The ImageDescription worth copying: no OME-XML (it names the source file's
    UUID/IFDs), ImageJ without the display range (stale after enhancement)."""
    stripped = text.lstrip()
    if not stripped or stripped.startswith("<") or "<OME" in text[:2000]:
        return ""
    if stripped.startswith("ImageJ="):
        keep = [ln for ln in text.splitlines() if not ln.startswith(("min=", "max="))]
        return "\n".join(keep) + "\n"
    return text


# --------------------------------------------------------------------------- write

def check_writable(path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any,
                   meta: Optional[ImageMeta] = None) -> None:
    """Raise ImageFileError if an array of this shape/dtype cannot go to ``path``.

    Cheap; run it before spending time on enhancement.
    """
    fmt = format_for_path(path)
    dtype = np.dtype(dtype)
    meta = meta or _guess_meta(shape)
    if fmt == "tiff":
        return
    if fmt == "fits":
        if meta.kind != "gray":
            raise ImageFileError(f"FITS stores gray images and stacks of them, not {meta.kind} "
                                 f"data; write TIFF instead")
        from .fits_io import FitsError, storage_for

        try:
            storage_for(dtype)
        except FitsError as exc:
            raise ImageFileError(f"{exc}; write TIFF instead") from None
        return
    label = fmt.upper()
    if meta.pages > 1:
        raise ImageFileError(
            f"{label} holds a single image but the input has {meta.pages} pages; "
            f"write TIFF instead (--format tif or keep)"
        )
    if meta.kind == "multichannel":
        raise ImageFileError(f"{label} cannot store {shape} multichannel data; write TIFF instead")
    if fmt == "png" and dtype not in (np.uint8, np.uint16):
        raise ImageFileError(f"PNG stores uint8 or uint16 only, not {dtype}; write TIFF instead")
    if fmt == "jpeg":
        if dtype != np.uint8:
            raise ImageFileError(f"JPEG stores 8-bit data only, not {dtype}; write PNG or TIFF instead")
        if meta.kind not in ("gray", "rgb"):
            raise ImageFileError(f"JPEG cannot store {meta.kind} data; write PNG or TIFF instead")


def _guess_meta(shape: tuple[int, ...]) -> ImageMeta:
    if len(shape) == 3 and shape[-1] in (2, 3, 4):
        return ImageMeta("", {2: "gray+alpha", 3: "rgb", 4: "rgba"}[shape[-1]], -1)
    if len(shape) == 2:
        return ImageMeta("", "gray", None)
    if len(shape) == 4 and shape[-1] in (3, 4):
        return ImageMeta("", "rgb" if shape[-1] == 3 else "rgba", -1, shape[0])
    if len(shape) == 3:
        return ImageMeta("", "gray", None, shape[0])
    raise ImageFileError(f"cannot write an array of shape {tuple(shape)} as an image")


def write_image(path: str | os.PathLike[str], array: np.ndarray,
                meta: Optional[ImageMeta] = None) -> Path:
    """Write ``array`` to ``path`` (format from the extension), atomically.

    ``meta`` (from :func:`read_image`) describes the layout and carries the
    metadata to keep; without it the layout is guessed from the shape
    (2-D gray, H x W x 2/3/4, or a stack of those for TIFF). An existing file
    at ``path`` is replaced.
    """
    path = Path(path)
    fmt = format_for_path(path)
    array = np.asarray(array)
    meta = meta or _guess_meta(array.shape)
    check_writable(path, array.shape, array.dtype, meta)
    if fmt != "tiff" and meta.channel_axis is not None and meta.channel_axis != -1:
        array = np.moveaxis(array, meta.channel_axis, -1)  # planar TIFF -> PNG/JPEG
        meta = replace(meta, channel_axis=-1)
    tmp = _create_partial(path)
    try:
        if fmt == "tiff":
            _write_tiff(tmp, array, meta)
        elif fmt == "fits":
            _write_fits(tmp, array, meta)
        elif fmt == "png" and array.dtype == np.uint16:
            with open(tmp, "wb") as fh:
                fh.write(_encode_png(array, meta.info))
        else:
            _write_pillow(tmp, array, fmt, meta.info)
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt included: never leave a partial file
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        _PARTIAL.discard(tmp)
    return path


#: temporary files being written right now (see remove_partial_files)
_PARTIAL: set[str] = set()


def _create_partial(path: Path) -> str:
    """Create the hidden temporary file ``.NAME.XXXXXXXX.part`` next to ``path``.

    Created with mode 0666 filtered by the umask, like any new file (mkstemp
    would make it 0600), then given the permission bits of the file it will
    replace, if any; registered for :func:`remove_partial_files`.
    """
    try:
        st = os.stat(path)
        keep = stat.S_IMODE(st.st_mode) & 0o777 if stat.S_ISREG(st.st_mode) else None
    except OSError:
        keep = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        _PARTIAL.add(tmp)
        try:
            if keep is not None:
                os.chmod(tmp, keep)
        except OSError:
            pass
        finally:
            os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


def remove_partial_files() -> None:
    """Delete the temporary files of writes in progress (for signal handlers: the
    process is about to exit and the write will never complete)."""
    for tmp in list(_PARTIAL):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        _PARTIAL.discard(tmp)


def _write_pillow(tmp: str, array: np.ndarray, fmt: str, info: dict) -> None:
    iio = _imageio()
    kwargs: dict[str, Any] = {}
    for key in ("icc_profile", "exif", "dpi"):
        if info.get(key):
            kwargs[key] = info[key]
    if fmt == "jpeg":
        kwargs["quality"] = JPEG_QUALITY
    iio.imwrite(tmp, np.ascontiguousarray(array), plugin="pillow",
                extension=".jpg" if fmt == "jpeg" else ".png", **kwargs)


def _read_fits(fh: Any, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    from .fits_io import FitsError, read_fits

    try:
        array, info = read_fits(fh, max_pixels,
                                lambda n: _check_pixels(n, 1, max_pixels, "FITS image"))
    except FitsError as exc:
        raise ImageFileError(str(exc)) from None
    if array.ndim < 2:
        raise ImageFileError(f"FITS data of shape {array.shape} is not an image (needs NAXIS >= 2)")
    pages = int(np.prod(array.shape[:-2]))
    return array, ImageMeta("fits", "gray", None, pages, {"fits": info})


def _write_fits(tmp: str, array: np.ndarray, meta: ImageMeta) -> None:
    from . import __version__
    from .fits_io import encode_fits

    info = meta.info.get("fits") if meta.format == "fits" else None
    history = f"msrnet-napari {__version__}: enhanced with MSR-net"
    if meta.info.get("history"):
        history += "\n" + str(meta.info["history"])
    with open(tmp, "wb") as fh:
        fh.write(encode_fits(array, info, history=history))


def _write_tiff(tmp: str, array: np.ndarray, meta: ImageMeta) -> None:
    tifffile = _tifffile()
    info = meta.info if meta.format == "tiff" else {}
    page_ndim = 2 if meta.channel_axis is None else 3
    pages = array.reshape((-1, *array.shape[-page_ndim:])) if array.ndim > page_ndim else array[None]
    if meta.kind in ("rgb", "rgba"):
        photometric = "rgb"
    else:
        photometric = info.get("photometric", "minisblack")
    planar = None
    if meta.channel_axis is not None:
        planar = "separate" if meta.channel_axis == -3 else "contig"
    kwargs: dict[str, Any] = {"photometric": photometric, "metadata": None}
    if planar:
        kwargs["planarconfig"] = planar
    if meta.kind in ("rgba", "gray+alpha"):
        kwargs["extrasamples"] = info.get("extrasamples", (2,))
    elif "extrasamples" in info:
        kwargs["extrasamples"] = info["extrasamples"]
    if info.get("compressed"):
        kwargs["compression"] = "zlib"
    if "resolution" in info:
        kwargs["resolution"] = info["resolution"]
        kwargs["resolutionunit"] = info.get("resolutionunit", 2)
    elif meta.info.get("dpi"):  # from PNG/JPEG
        kwargs["resolution"] = tuple(float(v) for v in meta.info["dpi"][:2])
        kwargs["resolutionunit"] = 2
    icc = meta.info.get("icc_profile")
    if icc:
        kwargs["iccprofile"] = icc
    bigtiff = array.nbytes > 2**32 - 2**25
    with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
        for i, page in enumerate(pages):
            extra = {"description": info["description"]} if i == 0 and info.get("description") else {}
            tw.write(page, contiguous=False, **kwargs, **extra)


# --------------------------------------------------------------------------- PNG codec
# 16-bit colour PNG support (Pillow reads such files as 8-bit and cannot write
# them). Non-interlaced, bit depth 8 or 16, colour types 0/2/4/6.

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + ctype + data
            + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF))


def _encode_png(array: np.ndarray, info: Optional[dict] = None) -> bytes:
    """PNG bytes of a uint8/uint16 (H, W) or (H, W, 2|3|4) array (Sub filter, zlib 6)."""
    info = info or {}
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageFileError(f"PNG stores uint8 or uint16 only, not {array.dtype}")
    h, w = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    depth = array.dtype.itemsize * 8
    bpp = channels * array.dtype.itemsize
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">"))
    raw = raw.view(np.uint8).reshape(h, w * bpp)
    rows = np.empty((h, 1 + w * bpp), dtype=np.uint8)
    rows[:, 0] = 1  # Sub: byte minus the same byte of the pixel to the left
    rows[:, 1:1 + bpp] = raw[:, :bpp]
    np.subtract(raw[:, bpp:], raw[:, :-bpp], out=rows[:, 1 + bpp:])
    out = [_PNG_SIGNATURE,
           _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))]
    icc = info.get("icc_profile")
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    dpi = info.get("dpi")
    if dpi:
        ppm = [max(1, int(round(float(v) / 0.0254))) for v in dpi[:2]]
        out.append(_png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    out.append(_png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _inflate(data: bytes, size: int) -> bytes:
    """zlib data inflated to at most ``size`` bytes (what follows is ignored): a
    decompression bomb costs ``size``, not what it would expand to."""
    inflate = zlib.decompressobj()
    try:
        return inflate.decompress(data, size)
    except zlib.error as exc:
        raise ImageFileError(f"corrupt PNG image data: {exc}") from None


def _decode_png(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """Decode PNG bytes (non-interlaced, 8/16-bit, colour types 0/2/4/6).

    The declared size is checked against ``max_pixels`` first; the image data is
    inflated with a bounded decompressor to exactly the declared size."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ImageFileError("not a PNG file (bad signature)")
    pos, ihdr, idat, info = 8, None, [], {}
    while True:
        if pos + 8 > len(data):
            raise ImageFileError("truncated PNG file (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise ImageFileError(f"truncated PNG file (in {ctype!r} chunk)")
        if struct.unpack(">I", crc)[0] != zlib.crc32(ctype + body) & 0xFFFFFFFF:
            raise ImageFileError(f"corrupt PNG file (CRC error in {ctype!r} chunk)")
        pos += 12 + length
        if ctype == b"IHDR":
            if len(body) != 13:
                raise ImageFileError("corrupt PNG file (bad IHDR chunk)")
            ihdr = struct.unpack(">IIBBBBB", body)
            _check_pixels(ihdr[0] * ihdr[1], _PNG_CHANNELS.get(ihdr[3], 1), max_pixels,
                          "PNG file")
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        elif ctype == b"iCCP":
            try:
                inflate = zlib.decompressobj()
                icc = inflate.decompress(body[body.index(b"\x00") + 2:], MAX_ICC_BYTES + 1)
                if len(icc) <= MAX_ICC_BYTES:  # a bigger one is dropped, not inflated
                    info["icc_profile"] = icc
            except (ValueError, zlib.error):
                pass
        elif ctype == b"pHYs" and len(body) == 9:
            px, py, unit = struct.unpack(">IIB", body)
            if unit == 1:
                info["dpi"] = (px * 0.0254, py * 0.0254)
    if ihdr is None or not idat:
        raise ImageFileError("corrupt PNG file (missing IHDR or IDAT)")
    w, h, depth, color_type, _, _, interlace = ihdr
    if interlace:
        raise ImageFileError("interlaced 16-bit colour PNG is not supported")
    if depth not in (8, 16) or color_type not in _PNG_CHANNELS:
        raise ImageFileError(f"unsupported PNG bit depth {depth} / colour type {color_type}")
    channels = _PNG_CHANNELS[color_type]
    bpp = channels * depth // 8
    stride = w * bpp
    raw = _inflate(b"".join(idat), h * (stride + 1))
    if len(raw) < h * (stride + 1):
        raise ImageFileError("truncated PNG image data")
    rows = np.frombuffer(raw, dtype=np.uint8, count=h * (stride + 1)).reshape(h, stride + 1)
    filters = rows[:, 0]
    if filters.size and int(filters.max()) > 4:
        raise ImageFileError("corrupt PNG image data (bad row filter)")
    pixels = _png_unfilter(rows[:, 1:], filters, bpp)
    dtype = np.dtype(">u2") if depth == 16 else np.dtype(np.uint8)
    array = pixels.view(dtype).reshape(h, w, channels).astype(dtype.newbyteorder("="))
    return (array[..., 0] if channels == 1 else array), info


def _png_unfilter(f: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    h, stride = f.shape
    w = stride // bpp
    out = np.empty((h, stride), dtype=np.uint8)
    if h == 0 or w == 0:
        return out
    if int(filters.max()) <= 2:  # None/Sub/Up only: row by row, vectorised along the row
        prev = np.zeros(stride, dtype=np.uint8)
        for r in range(h):
            t = filters[r]
            if t == 0:
                out[r] = f[r]
            elif t == 1:
                out[r] = np.cumsum(f[r].reshape(w, bpp), axis=0, dtype=np.uint8).reshape(-1)
            else:
                np.add(f[r], prev, out=out[r])
            prev = out[r]
        return out
    # Average/Paeth: each pixel needs its decoded left, upper and upper-left
    # neighbours, so decode along anti-diagonals (all independent of each other).
    fp = f.reshape(h, w, bpp).astype(np.int16)
    dec = np.zeros((h + 1, w + 1, bpp), dtype=np.int16)  # zero row/column of padding
    ftype = filters.astype(np.int16)
    for d in range(h + w - 1):
        r = np.arange(max(0, d - w + 1), min(h - 1, d) + 1)
        x = d - r
        a, b, c = dec[r + 1, x], dec[r, x + 1], dec[r, x]
        t = ftype[r][:, None]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([t == 0, t == 1, t == 2, t == 3], [0, a, b, (a + b) >> 1], paeth)
        dec[r + 1, x + 1] = (fp[r, x] + pred) & 0xFF
    out[:] = dec[1:, 1:].reshape(h, stride)
    return out
