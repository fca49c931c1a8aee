"""The bundled models, by name, and which one serves which data.

* ``"photo"`` - sRGB-encoded photos (8-bit RGB): brighten and denoise for the eye.
  Intensity model "photo" (bit-depth scaling, exposure normalisation in linear light).
* ``"microscopy"`` - linear sensor data (fluorescence microscopy, astronomy, any
  gray or multichannel scientific image): restore (denoise) in the data's own units,
  keeping the dark level and the intensities. Intensity model "linear".

Default (``model=None``, no ``weights``): RGB(A) data that is uint8 or float gets
"photo"; everything else - gray or multichannel data of any dtype, and RGB-shaped
integer data wider than 8 bits (e.g. a 16-bit 3-channel fluorescence composite) -
gets "microscopy". :func:`default_model_for` is that rule, in one place.
No torch, no napari.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .checkpoint import Checkpoint

__all__ = ["BundledModel", "available_models", "default_model_for", "model_info", "resolve_model"]

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class BundledModel:
    name: str
    file: str
    card: str
    serves: str

    @property
    def path(self) -> Path:
        return _WEIGHTS_DIR / self.file

    @property
    def card_path(self) -> Path:
        return _WEIGHTS_DIR / self.card


_MODELS = {
    "photo": BundledModel("photo", "msrnet_default.pt", "MODEL_CARD.md",
                          "sRGB photos (8-bit RGB): brighten and denoise for viewing"),
    "microscopy": BundledModel("microscopy", "msrnet_microscopy.pt", "MODEL_CARD_microscopy.md",
                               "linear scientific data (fluorescence, astronomy): denoise, "
                               "keep dark level and intensities"),
}


def available_models() -> list[str]:
    """Names of the bundled models installed here (``enhance(..., model=name)``)."""
    return [name for name, m in _MODELS.items() if m.path.is_file()]


def model_info(name: str) -> BundledModel:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {str(name)[:40]!r}; bundled models: "
                         f"{sorted(_MODELS)}") from None


def default_model_for(dtype: Any, rgb: bool) -> str:
    """The bundled model used when none is named (see the module docstring)."""
    dtype = np.dtype(dtype)
    if rgb and (dtype == np.uint8 or dtype.kind == "f"):
        return "photo"
    return "microscopy"


def resolve_model(model: Optional[str], weights: Any, *, dtype: Any, rgb: bool
                  ) -> tuple[str, Checkpoint]:
    """(label, checkpoint) for an enhance() call: ``weights`` (a path or Checkpoint)
    wins and is labelled "checkpoint"; else the named or default bundled model."""
    from .weights import resolve_weights

    if weights is not None:
        if model is not None:
            raise ValueError("pass either model= (a bundled model) or weights= (a checkpoint), "
                             "not both")
        return "checkpoint", resolve_weights(weights)
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a bundled model name, got {type(model).__name__}")
    name = model if model is not None else default_model_for(dtype, rgb)
    info = model_info(name)
    if not info.path.is_file():
        from .weights import DefaultWeightsMissingError

        raise DefaultWeightsMissingError(
            f"the bundled {name!r} model is not installed ({info.path} is missing); "
            f"installed: {available_models()}; pass weights=<checkpoint.pt>")
    return name, resolve_weights(info.path)
