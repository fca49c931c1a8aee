#!/usr/bin/env python3
"""Validate microscopy checkpoints the way msrnet-train-microscopy does (needs torch):

    python scripts/validate_microscopy.py CKPT.pt [CKPT.pt ...] [--data ../shared/data]
        [--photos ../shared/data/photos/bsds] [--val-binning auto|1] [--val-size 192]

Prints the mean and per-group PSNR (network units) of each checkpoint on the held-out
validation set (``training/microscopy_data.validation_set``), with ``--val-binning
auto`` (default) the product's path: crops binned where enhance() would bin them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if SRC.is_dir() and str(SRC) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(SRC))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--photos", default="../shared/data/photos/bsds")
    p.add_argument("--val-binning", choices=("auto", "1"), default="auto")
    p.add_argument("--val-size", type=int, default=192)
    args = p.parse_args(argv)

    import torch

    from msrnet_napari.checkpoint import load_checkpoint
    from msrnet_napari.training import microscopy_data as md
    from msrnet_napari.training.model import MSRNet
    from msrnet_napari.training.train_microscopy import Trainer

    torch.set_num_threads(1)
    data = md.load(args.data, args.photos)
    val_sets = {}  # the same crops; with their noise level for noise_input checkpoints
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        told = bool(ckpt.config.noise_input)
        if told not in val_sets:
            val_sets[told] = md.validation_set(data, args.val_size, condition=told)
        val_set = val_sets[told]
        model = MSRNet(ckpt.config)
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ckpt.weights.items()})
        trainer = Trainer(argparse.Namespace(val_binning=args.val_binning, val_groups=None))
        trainer.model, trainer.val_set = model, val_set
        val = trainer.validate()
        levels = " ".join(f"{k}:{v:.2f}" for k, v in val["levels"].items())
        print(f"{path} (--val-binning {args.val_binning}): mean {val['psnr']:.3f} {levels}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
