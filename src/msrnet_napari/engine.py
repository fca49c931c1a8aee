"""Inference backends: the compiled CPU engine and, when built, the CUDA engine.

No torch and no napari here.  ``Engine(checkpoint, device=...)`` wraps
``msrnet_napari._core`` (see docs/ARCHITECTURE.md; typed in _core.pyi): images are float32
H x W x 3 arrays, processed in tiles whose halo makes the result independent
of the tile size.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from . import _core
from .checkpoint import Checkpoint

__all__ = ["Cancelled", "Engine", "cuda_available"]

Cancelled = _core.Cancelled  # raised by Engine.run when progress(...) returned False

ProgressFn = Callable[[int, int], Optional[bool]]
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32")


def check_precision(precision: str) -> None:
    """ValueError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def cuda_available() -> bool:
    """True when the extension was built with CUDA and a GPU is usable."""
    if not getattr(_core, "has_cuda", False):
        return False
    try:
        return _core.cuda_device_count() > 0
    except Exception:  # broken driver: behave like no GPU
        return False


class Engine:
    """MSR-net forward pass on one device.

    device: "auto" (CUDA when :func:`cuda_available`, else CPU), "cpu" or "cuda".
    precision: "fp32" (default) or "tf32": f2's convolutions on the GPU's tensor cores
    (compute capability >= 8.0, width 16 or 32), inputs and weights rounded to a 10-bit
    mantissa, fp32 accumulation; error bound in cpp/cuda/standalone_test.cu. Only the
    CUDA engine has it: the CPU engine always computes in fp32. :attr:`precision` says
    what runs.
    """

    def __init__(self, checkpoint: Checkpoint, device: str = "auto",
                 precision: str = "fp32") -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        check_precision(precision)
        if device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        if device == "cuda" and not cuda_available():
            reason = ("this build of msrnet-napari has no CUDA support"
                      if not getattr(_core, "has_cuda", False) else "no CUDA GPU was found")
            raise RuntimeError(f"device='cuda' requested but {reason}; use device='cpu'")
        # the exposure gain is applied by enhance() before the engine runs
        config = checkpoint.config.engine_dict()
        weights = {k: np.ascontiguousarray(v, dtype=np.float32)
                   for k, v in checkpoint.weights.items()}
        self._impl: _core.Engine | _core.CudaEngine
        if device == "cuda":
            self._impl = _core.CudaEngine(config, weights, precision=precision)
            #: arithmetic actually used ("fp32" where the GPU or the width has no TF32 kernel)
            self.precision: str = str(self._impl.precision)
        else:
            self._impl = _core.Engine(config, weights)
            self.precision = "fp32"
        self.device = device
        # GPUs need big tiles to be busy (see benchmarks/bench_cuda.py); the CPU engine
        # sizes its tile from the cache (cpp/engine_cpu.cpp, default_tile_for)
        self.default_tile = 2048 if device == "cuda" else int(self._impl.default_tile)
        self.config = checkpoint.config

    @property
    def receptive_radius(self) -> int:
        return int(self._impl.receptive_radius)

    def run(self, image: np.ndarray, *, tile: Optional[int] = None, threads: int = 0,
            progress: ProgressFn | None = None) -> np.ndarray:
        """Run the network on one float32 H x W x 3 image; returns the raw (unclipped) output.

        The input is used as given: exposure normalisation
        (``config.exposure_gain``) needs the mean of the whole image and is applied
        by the caller (:func:`msrnet_napari.enhance`), not per tile here.

        ``progress(done_tiles, total_tiles)`` is called after every tile; return
        False to stop (raises :class:`Cancelled`).  threads=0 uses every core.
        """
        image = np.asarray(image)
        if image.dtype != np.float32:
            raise TypeError(f"image must be float32, got {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
        image = np.ascontiguousarray(image)
        tile = self.default_tile if tile is None else int(tile)
        return self._impl.run(image, tile=tile, threads=int(threads), progress=progress)

    def __repr__(self) -> str:
        return f"Engine(device={self.device!r}, precision={self.precision!r}, config={self.config!r})"
