"""FITS images (astronomy) for ``msrnet-enhance`` and the napari reader: a small
built-in codec, no dependency, bounded like the other readers (docs/SECURITY.md).

Serves **scientific imagery**: FITS holds linear sensor data (counts), so the
values are returned as they are stored, in their physical units:

* ``BITPIX`` 8 -> uint8, 16 / 32 / 64 -> int16 / int32 / int64, -32 / -64 ->
  float32 / float64 (big-endian on disk, native in memory);
* the unsigned-integer convention (``BSCALE = 1`` with ``BZERO`` = 2^15, 2^31, 2^63,
  or -128 for bytes) gives uint16 / uint32 / uint64 (int8);
* any other ``BSCALE`` / ``BZERO`` gives the physical values ``BZERO + BSCALE * x``
  as float32 (``BITPIX`` 8, 16) or float64 (32, 64), written back as floats;
* integer pixels equal to ``BLANK`` (undefined) become NaN, in float32 / float64
  the same way - missing values, which the linear model leaves out and keeps.

The image is the primary HDU's data, or the first IMAGE extension when the
primary HDU has none. ``NAXIS1`` is x (columns), ``NAXIS2`` y; further axes are
leading array axes (planes). :func:`write_fits` writes the image HDU back with
the source header's cards (WCS, exposure, observer ... all kept; the structural
keywords rewritten for the new dtype, checksums dropped because they no longer
hold, a ``HISTORY`` card added) and every other HDU of the source copied byte for
byte, so nothing of the file is lost.

Hostile files: the header is read card by card up to :data:`MAX_HEADER_BLOCKS`
blocks, the declared size is checked against the pixel limit before any data
is read, truncated data is an error, and the other HDUs are kept only up to
:data:`MAX_OTHER_BYTES` (beyond that reading fails with a clear message).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Optional

import numpy as np

__all__ = ["FITS_EXTENSIONS", "FitsError", "FitsInfo", "read_fits", "encode_fits", "storage_for"]

FITS_EXTENSIONS = (".fits", ".fit", ".fts")
BLOCK = 2880
CARD = 80
MAX_HEADER_BLOCKS = 1000  # 36,000 cards: real headers have tens to a few thousand
MAX_OTHER_BYTES = 256 * 1024**2  # other HDUs (tables, masks...) kept for the output
MAX_HDUS = 1000

_BITPIX = {8: np.dtype(">u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8"),
           -32: np.dtype(">f4"), -64: np.dtype(">f8")}
# BZERO of the unsigned (or, for bytes, signed) convention per BITPIX
_UNSIGNED = {8: (-128, np.int8), 16: (1 << 15, np.uint16), 32: (1 << 31, np.uint32),
             64: (1 << 63, np.uint64)}
# keywords the writer sets itself (structure, scaling, checksums of the old data)
_STRUCTURAL = re.compile(r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BZERO|BSCALE|"
                         r"BLANK|CHECKSUM|DATASUM|END)$")


class FitsError(ValueError):
    """Not a FITS image this codec reads (or writes): corrupt, truncated, unsupported."""


@dataclass
class FitsInfo:
    """What :func:`encode_fits` needs to write an image back into its file.

    cards: the image HDU's header cards (80 characters each, END excluded);
    extension: the image came from an IMAGE extension (not the primary HDU);
    before / after: the bytes of the file before and after the image HDU (other
    HDUs, copied unchanged); scaled: the values were made floats on reading
    (``BSCALE`` / ``BZERO`` scaling, or ``BLANK`` pixels turned NaN).
    """

    cards: list[str] = field(default_factory=list)
    extension: bool = False
    before: bytes = b""
    after: bytes = b""
    scaled: bool = False


def _blocks(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _value(card: str) -> Optional[str]:
    """The value field of a ``KEY = value / comment`` card (None without '= ')."""
    if card[8:10] != "= ":
        return None
    text = card[10:].strip()
    if text.startswith("'"):  # string: '' is a quote inside
        m = re.match(r"'((?:[^']|'')*)'", text)
        return None if m is None else "'" + m.group(1).replace("''", "'").rstrip()
    return text.split("/", 1)[0].strip()


class _Header:
    def __init__(self, cards: list[str]) -> None:
        self.cards = cards
        self.values: dict[str, str] = {}
        for c in cards:
            key = c[:8].strip()
            v = _value(c)
            if key and v is not None and key not in self.values:
                self.values[key] = v

    def text(self, key: str) -> Optional[str]:
        v = self.values.get(key)
        return v[1:] if v is not None and v.startswith("'") else v

    def integer(self, key: str, default: Optional[int] = None, lo: int = -(1 << 63),
                hi: int = (1 << 64)) -> int:
        v = self.values.get(key)
        if v is None:
            if default is None:
                raise FitsError(f"header keyword {key} is missing")
            return default
        try:
            n = int(v)
        except ValueError:
            try:
                f = float(v.replace("D", "E"))
            except ValueError:
                raise FitsError(f"header keyword {key} = {v[:30]!r} is not an integer") from None
            if not f.is_integer():
                raise FitsError(f"header keyword {key} = {v[:30]!r} is not an integer") from None
            n = int(f)
        if not lo <= n <= hi:
            raise FitsError(f"header keyword {key} = {n} is out of range")
        return n

    def number(self, key: str, default: float) -> float:
        v = self.values.get(key)
        if v is None:
            return default
        try:
            return float(v.replace("D", "E"))
        except ValueError:
            raise FitsError(f"header keyword {key} = {v[:30]!r} is not a number") from None


def _read_exact(fh: BinaryIO, n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise FitsError(f"truncated FITS file: {what} needs {n} bytes, {len(data)} left")
    return data


def _read_header(fh: BinaryIO, first: bool) -> Optional[tuple[_Header, bytes]]:
    """The next HDU's header (and its raw bytes), None at a clean end of file."""
    cards: list[str] = []
    raw = bytearray()
    for _ in range(MAX_HEADER_BLOCKS):
        block = fh.read(BLOCK)
        if not block and not raw and not first:
            return None
        if len(block) != BLOCK:
            if not raw and not first and not block.strip(b"\0 "):
                return None  # padding after the last HDU
            raise FitsError("truncated FITS header")
        if first and not raw and not block.startswith(b"SIMPLE  ="):
            raise FitsError("not a FITS file (it does not start with a SIMPLE card)")
        raw += block
        try:
            text = block.decode("ascii")
        except UnicodeDecodeError:
            raise FitsError("FITS header holds non-ASCII bytes") from None
        for i in range(0, BLOCK, CARD):
            card = text[i:i + CARD]
            if card[:8].rstrip() == "END":
                return _Header(cards), bytes(raw)
            cards.append(card)
    raise FitsError(f"FITS header longer than {MAX_HEADER_BLOCKS} blocks (no END card)")


def _shape_and_size(h: _Header) -> tuple[tuple[int, ...], int, int]:
    """(array shape, data bytes incl. padding, pixels) of an HDU."""
    bitpix = h.integer("BITPIX", lo=-64, hi=64)
    if bitpix not in _BITPIX:
        raise FitsError(f"unsupported BITPIX {bitpix}")
    naxis = h.integer("NAXIS", lo=0, hi=999)
    dims = [h.integer(f"NAXIS{i}", lo=0, hi=1 << 40) for i in range(1, naxis + 1)]
    pixels = int(np.prod(dims, dtype=object)) if dims else 0
    pcount = h.integer("PCOUNT", 0, lo=0, hi=1 << 50)
    gcount = h.integer("GCOUNT", 1, lo=0, hi=1 << 40)
    size = abs(bitpix) // 8 * gcount * (pcount + pixels)
    return tuple(reversed(dims)), _blocks(size), pixels


def read_fits(fh: BinaryIO, max_pixels: int,
              check_pixels: Optional[Callable[[int], None]] = None
              ) -> tuple[np.ndarray, FitsInfo]:
    """Read the image of a FITS file (see the module docstring) and what writes it back.

    ``check_pixels(pixels)`` is called with the declared pixel count before the
    data is read (the caller's limit check); without it ``max_pixels`` is enforced here.
    """
    before = bytearray()
    first = True
    for _ in range(MAX_HDUS):
        got = _read_header(fh, first)
        if got is None:
            break
        h, raw = got
        if first and h.values.get("SIMPLE") != "T":
            raise FitsError("SIMPLE = F: not a standard FITS file")
        xtension = None if first else (h.text("XTENSION") or "").strip()
        shape, size, pixels = _shape_and_size(h)
        is_image = pixels > 0 and (first or xtension == "IMAGE")
        if xtension == "BINTABLE" and h.values.get("ZIMAGE") == "T":
            raise FitsError("tile-compressed FITS images (fpack, ZIMAGE) are not supported; "
                            "decompress the file first (funpack)")
        if not is_image:  # an empty primary HDU, a table...: keep it, look further
            if len(before) + len(raw) + size > MAX_OTHER_BYTES:
                raise FitsError(f"no image within the first {MAX_OTHER_BYTES >> 20} MiB of HDUs")
            before += raw + _read_exact(fh, size, "an HDU")
            first = False
            continue
        if check_pixels is not None:
            check_pixels(pixels)
        elif pixels > max_pixels:
            raise FitsError(f"image of {pixels} pixels is larger than the limit {max_pixels}")
        bitpix = h.integer("BITPIX")
        stored = np.dtype(_BITPIX[bitpix])
        nbytes = pixels * stored.itemsize
        data = np.frombuffer(_read_exact(fh, nbytes, "the image"), dtype=stored).reshape(shape)
        _read_exact(fh, size - nbytes, "the image padding")
        array, scaled = _physical(data, h, bitpix)
        if bitpix > 0 and "BLANK" in h.values:  # undefined pixels of integer data -> NaN
            missing = data == h.integer("BLANK")
            if missing.any():
                array = array.astype(np.float32 if bitpix <= 16 else np.float64)
                array[missing] = np.nan
                scaled = True
        after = fh.read(MAX_OTHER_BYTES + 1)
        if len(after) > MAX_OTHER_BYTES:
            raise FitsError(f"the HDUs after the image are larger than {MAX_OTHER_BYTES >> 20} MiB "
                            f"(kept for the output); extract the image first")
        return array, FitsInfo(h.cards, not first, bytes(before), after, scaled)
    raise FitsError("FITS file without an image (no HDU with data)")


def _physical(data: np.ndarray, h: _Header, bitpix: int) -> tuple[np.ndarray, bool]:
    """The stored values in native byte order and physical units (and whether scaled)."""
    native = data.astype(data.dtype.newbyteorder("="))
    bscale, bzero = h.number("BSCALE", 1.0), h.number("BZERO", 0.0)
    if bscale == 1.0 and bzero == 0.0:
        return native, False
    if bitpix > 0 and bscale == 1.0 and bzero == _UNSIGNED[bitpix][0]:
        return _flip_top_bit(native).view(_UNSIGNED[bitpix][1]), False
    out = np.float32 if bitpix in (8, 16, -32) else np.float64
    return native.astype(out) * out(bscale) + out(bzero), True


# --------------------------------------------------------------------------- write

def _card(key: str, value: str, comment: str = "") -> str:
    text = f"{key:<8}= {value:>20}"
    if comment:
        text += f" / {comment}"
    return f"{text[:CARD]:<{CARD}}"


def storage_for(dtype: np.dtype) -> tuple[int, Optional[int], np.dtype]:
    """(BITPIX, BZERO or None, big-endian stored dtype) for an array dtype: the reading
    tables backwards (a BITPIX's own type, else its offset convention); float16 as
    float32. FitsError for dtypes FITS cannot store."""
    dtype = np.dtype(np.float32 if np.dtype(dtype) == np.float16 else dtype)
    for bitpix, stored in _BITPIX.items():
        if stored.newbyteorder("=") == dtype:
            return bitpix, None, stored
    for bitpix, (bzero, kind) in _UNSIGNED.items():
        if np.dtype(kind) == dtype:
            return bitpix, bzero, _BITPIX[bitpix]
    raise FitsError(f"FITS cannot store {dtype} data")


def _flip_top_bit(a: np.ndarray) -> np.ndarray:
    """``a``'s bytes as unsigned integers with the top bit flipped: adding or removing an
    offset-convention BZERO (-128, 2^15, 2^31, 2^63) without overflow."""
    size = a.dtype.itemsize
    return np.ascontiguousarray(a).view(f"u{size}") ^ np.array(1 << (size * 8 - 1), f"u{size}")


def _stored_values(array: np.ndarray, bzero: Optional[int], stored: np.dtype) -> np.ndarray:
    if bzero is None:
        return np.ascontiguousarray(array, dtype=stored)
    return _flip_top_bit(array).view(stored.newbyteorder("=")).astype(stored)


def encode_fits(array: np.ndarray, info: Optional[FitsInfo] = None,
                history: str = "") -> bytes:
    """The bytes of a FITS file holding ``array`` (written by
    :func:`msrnet_napari.image_files.write_image`): ``info`` (from :func:`read_fits`) brings the
    source's header cards and other HDUs back; ``history`` becomes HISTORY cards."""
    array = np.asarray(array)
    if array.ndim < 1 or array.size == 0:
        raise FitsError(f"cannot write an array of shape {array.shape} as a FITS image")
    if array.ndim > 999:
        raise FitsError("FITS images have at most 999 axes")
    info = info or FitsInfo()
    bitpix, bzero, stored = storage_for(array.dtype)
    if info.extension:
        cards = [_card("XTENSION", "'IMAGE   '", "image extension")]
    else:
        cards = [_card("SIMPLE", "T", "conforms to FITS standard")]
    cards.append(_card("BITPIX", str(bitpix), "array data type"))
    cards.append(_card("NAXIS", str(array.ndim), "number of array dimensions"))
    for i, n in enumerate(reversed(array.shape), start=1):
        cards.append(_card(f"NAXIS{i}", str(n)))
    if info.extension:
        cards += [_card("PCOUNT", "0"), _card("GCOUNT", "1")]
    elif info.after or any(c[:8].strip() == "EXTEND" for c in info.cards):
        cards.append(_card("EXTEND", "T" if info.after or _extend(info.cards) else "F"))
    if bzero is not None:
        cards += [_card("BSCALE", "1"), _card("BZERO", str(bzero), "offset data range")]
    cards += [c for c in info.cards if not _STRUCTURAL.match(c[:8].strip())]
    for line in _history_lines(history):
        cards.append(f"{'HISTORY ' + line:<{CARD}}")
    cards.append(f"{'END':<{CARD}}")
    header = "".join(cards).encode("ascii", "replace")
    header += b" " * (_blocks(len(header)) - len(header))
    data = _stored_values(array, bzero, stored).tobytes()
    data += b"\0" * (_blocks(len(data)) - len(data))
    return info.before + header + data + info.after


def _extend(cards: list[str]) -> bool:
    return any(c[:8].strip() == "EXTEND" and _value(c) == "T" for c in cards)


def _history_lines(text: str) -> list[str]:
    """HISTORY card texts (72 characters each, broken between words where possible)."""
    out = []
    for line in text.splitlines():
        line = line.encode("ascii", "replace").decode("ascii")
        out += textwrap.wrap(line, CARD - 8, break_long_words=True) or [""]
    return out
