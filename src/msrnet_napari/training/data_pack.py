"""Pack the train+val images into one compressed ``.npz`` for the GPU machine.

    python scripts/make_data_pack.py [--images data/images] [--splits data/splits.json]
                                     [--out data/pack.npz] [--max-mb 40] [--max-side 1024]

(or ``python -m msrnet_napari.training.data_pack ...``).

Images are stored as uint8 HxWx3 (``train_<i>``/``val_<i>`` + ``train_names``/
``val_names``; read by ``msrnet_napari.training.data.load_pack`` / ``msrnet-train --pack``).
If the compressed pack is larger than ``--max-mb``, every image is downsized
(Lanczos, long side shrunk by 10 % per round) until it fits. The split is kept
exactly (whole images; validation images are never trained on).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .data import load_folder, save_pack


def shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    from PIL import Image

    s = max_side / max(h, w)
    im = Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="data/images")
    p.add_argument("--splits", default="data/splits.json")
    p.add_argument("--out", default="data/pack.npz")
    p.add_argument("--max-mb", type=float, default=40.0)
    p.add_argument("--max-side", type=int, default=1024)
    args = p.parse_args(argv)

    train, val = load_folder(args.images, args.splits if os.path.exists(args.splits) else None)
    side = args.max_side
    while True:
        t = {k: shrink(v, side) for k, v in train.items()}
        v_ = {k: shrink(v, side) for k, v in val.items()}
        save_pack(args.out, t, v_)
        mb = os.path.getsize(args.out) / 1e6
        px = sum(a.shape[0] * a.shape[1] for a in t.values()) / 1e6
        print(f"max side {side}: {len(t)} train ({px:.1f} MP) + {len(v_)} val -> "
              f"{args.out} {mb:.1f} MB")
        if mb <= args.max_mb or side < 128:
            break
        side = int(side * 0.9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
