"""napari reader for FITS images (astronomy), so that File > Open takes them.

Serves **scientific imagery**: the image comes in its physical units
(:mod:`msrnet_napari.fits_io`: unsigned-integer convention applied, other
``BSCALE``/``BZERO`` scaling as floats), one image layer per file, the header's
cards in ``layer.metadata["fits_header"]``. No napari import: npe2 calls
:func:`get_reader` with a path and gets back a function returning layer data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

from .fits_io import FITS_EXTENSIONS

PathLike = Union[str, Path]


def get_reader(path: Union[PathLike, list[PathLike]]) -> Optional[Callable[..., list]]:
    """The FITS reader when every path is a FITS file (by extension), else None."""
    paths = path if isinstance(path, list) else [path]
    if not paths or not all(str(p).lower().endswith(FITS_EXTENSIONS) for p in paths):
        return None
    return read_fits_layers


def read_fits_layers(path: Union[PathLike, list[PathLike]]) -> list[tuple[Any, dict, str]]:
    """[(data, layer keyword arguments, "image")] for each FITS file."""
    from .image_files import read_image

    paths = path if isinstance(path, list) else [path]
    layers = []
    for p in paths:
        array, meta = read_image(p)
        info = meta.info["fits"]
        layers.append((array, {
            "name": Path(p).stem,
            "metadata": {"fits_header": [c.rstrip() for c in info.cards],
                         "fits_scaled": info.scaled, "source": str(p)},
        }, "image"))
    return layers
