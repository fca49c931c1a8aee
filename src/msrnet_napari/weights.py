"""Where model weights come from: the bundled default or a user checkpoint.

No torch here. Checkpoints loaded from a path are cached by (resolved path,
mtime, size), so repeated ``enhance()`` calls do not re-read the file, while a
checkpoint rewritten in place (e.g. by a running ``msrnet-train``) is reloaded.

The default file lives in the package folder ``weights/`` (a data folder, not
a subpackage: it must never get an ``__init__.py``, which would shadow this
module).
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Any

from ._safe_open import dangling_symlink_error, file_kind
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint

__all__ = [
    "DEFAULT_WEIGHTS",
    "DefaultWeightsMissingError",
    "clear_cache",
    "default_weights_path",
    "resolve_weights",
]

DEFAULT_WEIGHTS = "msrnet_default.pt"
_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class DefaultWeightsMissingError(FileNotFoundError):
    """This installation has no bundled default weights."""


def default_weights_path() -> Path:
    """Path of the bundled default checkpoint; raises if it is not installed."""
    path = _WEIGHTS_DIR / DEFAULT_WEIGHTS
    if not path.is_file():
        raise DefaultWeightsMissingError(
            f"no default MSR-net weights: {path} does not exist. This build of "
            f"msrnet-napari ships no trained default model; pass weights=<checkpoint.pt> "
            f"(e.g. one written by msrnet-train) or put a checkpoint at that path."
        )
    return path


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> Checkpoint:
    return load_checkpoint(path)


def clear_cache() -> None:
    """Forget every cached checkpoint."""
    _load_cached.cache_clear()


def _load_path(path: str | os.PathLike[str]) -> Checkpoint:
    given = Path(os.fspath(path)).expanduser()
    resolved = given.resolve()
    try:
        st = resolved.stat()  # FileNotFoundError for a missing file, as open() would
    except FileNotFoundError:
        dangling = dangling_symlink_error(given)
        if dangling is not None:
            raise dangling from None
        raise
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block open(); refuse before opening
        raise CheckpointError(f"cannot load checkpoint {given}: it is "
                              f"{file_kind(st.st_mode)}, not a regular file")
    return _load_cached(str(resolved), st.st_mtime_ns, st.st_size)


def resolve_weights(weights: Any = None) -> Checkpoint:
    """``None`` -> bundled default, path -> :func:`load_checkpoint` (cached),
    :class:`Checkpoint` -> itself. Anything else is a ``TypeError``.

    A path that is not a regular file (FIFO, device, directory) is a
    :class:`CheckpointError` before anything is opened; a dangling symlink is a
    ``FileNotFoundError`` that says so."""
    if weights is None:
        return _load_path(default_weights_path())
    if isinstance(weights, Checkpoint):
        return weights
    if isinstance(weights, (str, os.PathLike)):
        return _load_path(weights)
    raise TypeError(
        f"weights must be None, a checkpoint path or a Checkpoint, got "
        f"{type(weights).__name__}"
    )
