"""napari writer for FITS images: File > Save Selected Layer(s)... as ``.fits``.

Serves **scientific imagery**: a layer opened from a FITS file (``_reader``) - or
the MSR-net result of one, which carries its source's header - is written back
with that header's cards (WCS and the rest kept, structural keywords rewritten
for the data, a ``HISTORY`` card with the enhancement's decision when there is
one). Gray images and stacks only, like the command line. No napari import.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .fits_io import CARD, FitsInfo


def write_fits(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 single-layer writer: ``data`` of an image layer -> the FITS file ``path``."""
    from .image_files import ImageMeta, write_image

    if attributes.get("rgb"):
        raise ValueError("FITS stores gray images and stacks of them, not RGB layers; "
                         "save as TIFF instead")
    metadata = attributes.get("metadata") or {}
    cards = [f"{str(c)[:CARD]:<{CARD}}" for c in metadata.get("fits_header", [])]
    info: dict[str, Any] = {"fits": FitsInfo(cards=cards)}
    decision = (metadata.get("msrnet") or {}).get("decision")
    if decision:
        info["history"] = str(decision)
    array = np.asarray(data)
    written = write_image(path, array, ImageMeta("fits", "gray", None, 1, info))
    return [str(written)]
