#!/usr/bin/env python3
"""Entry point for :mod:`msrnet_napari.training.data_pack` (see its docstring for usage)."""

from __future__ import annotations

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if SRC.is_dir() and str(SRC) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(SRC))

from msrnet_napari.training.data_pack import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
