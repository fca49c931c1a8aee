"""How much a lamp lowers the photo model's exposure gain: for each held-out LOL low image,
the gain with a saturated square on 1 % of its area over the gain without it, for the
bundled photo model's robust statistic and for the plain mean (same checkpoint otherwise).

    python docs/tools/lamp_gain.py      (from the repository root; data in ../shared/data)
"""

import json
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np

import msrnet_napari
from msrnet_napari.checkpoint import load_checkpoint

LOW = Path("../shared/data/lol_train/low")
SPLITS = Path("candidates/photo_v2_pair_splits.json")


def with_lamp(img: np.ndarray, area: float = 0.01) -> np.ndarray:
    side = int(round((area * img.shape[0] * img.shape[1]) ** 0.5))
    lamp = img.copy()
    lamp[:side, :side] = 255
    return lamp


def main() -> None:
    robust = load_checkpoint("src/msrnet_napari/weights/msrnet_default.pt")
    models = {"robust": robust,
              "mean": replace(robust, config=replace(robust.config, exposure_statistic="mean"))}
    ratios: dict[str, list[float]] = {name: [] for name in models}
    for stem in json.loads(SPLITS.read_text())["val"]:
        img = np.asarray(iio.imread(next(LOW.glob(stem + ".*"))))[..., :3].astype(np.uint8)
        for name, ckpt in models.items():
            plain = msrnet_napari.exposure_gain_for(img, weights=ckpt)
            ratios[name].append(msrnet_napari.exposure_gain_for(with_lamp(img), weights=ckpt) / plain)
    for name, values in ratios.items():
        r = np.asarray(values)
        print(f"{name}: {r.size} images, gain with lamp / without: median {np.median(r):.2f}, "
              f"min {r.min():.2f}, max {r.max():.2f}")


if __name__ == "__main__":
    main()
