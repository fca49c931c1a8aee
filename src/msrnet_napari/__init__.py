"""msrnet-napari: low-light image enhancement with MSR-net.

>>> import msrnet_napari
>>> bright = msrnet_napari.enhance(dark_uint8_rgb)          # doctest: +SKIP

The compiled engine is imported on first use, so configuration, checkpoint
and training modules work without it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"  # the one place: pyproject.toml (regex provider) and CMake read it

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .config import MSRNetConfig
from .enhance import enhance, exposure_gain_for, scaling_for
from .intensity import IntensityDecision
from .models import available_models

__all__ = [
    "Cancelled",
    "Checkpoint",
    "CheckpointError",
    "IntensityDecision",
    "MSRNetConfig",
    "available_models",
    "cuda_available",
    "enhance",
    "exposure_gain_for",
    "load_checkpoint",
    "scaling_for",
    "__version__",
]


def __getattr__(name: str) -> Any:  # lazy: these need the compiled engine
    if name in ("Cancelled", "cuda_available"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
