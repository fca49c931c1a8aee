"""Types of the compiled engine msrnet_napari._core (cpp/bindings.cpp).

Images are float32 (H, W, 3) C-contiguous arrays; weights are a state dict of
float32 arrays in PyTorch layout (names and shapes: :func:`parameter_shapes`,
equal to ``msrnet_napari.config.parameter_shapes``); ``config`` is
``MSRNetConfig.engine_dict()`` (exactly log_bases, depth, width, f1_width).
tests/test_engine.py checks that this stub names what the module exports.
"""

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

#: True when the extension was built with the CUDA engine (then CudaEngine exists).
has_cuda: bool

ProgressFn = Callable[[int, int], object]  # (done, total) -> falsy to cancel; None continues

class Cancelled(Exception):
    """Raised by ``run`` when the progress callback returned a falsy value (not None)."""

def simd_level() -> str:
    """Kernel set of the CPU engine on this machine: "avx512", "avx2" or "generic"."""

def cuda_device_count() -> int:
    """Usable CUDA devices; 0 without CUDA support, driver or GPU. Never raises."""

def parameter_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """State-dict name -> shape of every weight, in forward order (the C++ layer table)."""

class Engine:
    """The CPU engine (SIMD kernels; threads take whole tiles, see cpp/engine_cpu.cpp)."""

    def __init__(self, config: Mapping[str, Any], weights: Mapping[str, npt.ArrayLike]) -> None: ...
    def run(self, image: npt.NDArray[np.float32], tile: int | None = None, threads: int = 0,
            progress: ProgressFn | None = None) -> npt.NDArray[np.float32]:
        """Raw (unclipped) network output; tile >= 1 (None = ``default_tile``) is the largest
        tile edge, threads in 0..1024 (0 = all cores) the most threads (``plan`` says how
        many pay). Bit-identical for any ``threads``; progress runs on the calling thread,
        once per tile, done = 1..total in order."""
    def plan(self, height: int, width: int, tile: int | None = None,
             threads: int = 0) -> tuple[int, int, int]:
        """(tile, tiles, threads) that ``run`` uses for an image of this size."""
    @property
    def default_tile(self) -> int:
        """Tile edge whose per-thread workspace fits the thread's share of the cache."""
    @property
    def receptive_radius(self) -> int: ...

class CudaEngine:
    """The CUDA engine; only present when ``has_cuda`` (``threads`` is accepted and unused)."""

    def __init__(self, config: Mapping[str, Any], weights: Mapping[str, npt.ArrayLike],
                 device: int = 0, precision: str = "fp32") -> None: ...
    def run(self, image: npt.NDArray[np.float32], tile: int = 256, threads: int = 0,
            progress: ProgressFn | None = None) -> npt.NDArray[np.float32]: ...
    @property
    def receptive_radius(self) -> int: ...
    @property
    def precision(self) -> str:
        """"tf32" (tensor cores) only where requested and the device and width allow it."""
