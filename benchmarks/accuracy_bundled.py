"""Max abs difference of the C++ engine from the PyTorch reference (float64) on the bundled
weights, for each Winograd tile size.

Serves both intensity models (the engine is shared). Input: one 256 x 256 random image in
[0, 1] (photo) or [0, 4] (microscopy: the linear model's inputs reach its ceiling, 4),
already in network units (no exposure gain). Needs torch (the [train] extra).

    python benchmarks/accuracy_bundled.py
"""

from __future__ import annotations

import os

import numpy as np


def main() -> int:
    import torch

    from msrnet_napari.engine import Engine
    from msrnet_napari.models import model_info
    from msrnet_napari.training.model import model_from_checkpoint
    from msrnet_napari.weights import resolve_weights

    rng = np.random.default_rng(0)
    print("| weights | input range | F(6x6) | F(4x4) | F(2x2) | direct |")
    print("|---|---|---|---|---|---|")
    for name, top in (("photo", 1.0), ("microscopy", 4.0)):
        path = model_info(name).path
        model = model_from_checkpoint(path).eval().double()
        x = (rng.random((256, 256, 3)) * top).astype(np.float32)
        with torch.no_grad():
            t = torch.from_numpy(x.transpose(2, 0, 1)).double()[None]
            ref = model.f3(model.f2(model.f1(t)))[0].permute(1, 2, 0).numpy()
        cells = []
        for m in ("6", "4", "2", "0"):  # the engine reads MSRNET_WINOGRAD when it is built
            os.environ["MSRNET_WINOGRAD"] = m
            out = Engine(resolve_weights(path), device="cpu").run(x)
            cells.append(f"{float(np.abs(out - ref).max()):.1e}")
        os.environ.pop("MSRNET_WINOGRAD")
        print(f"| {name} | [0, {top:g}] | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
