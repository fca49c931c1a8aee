"""Average the weights of checkpoints of one training run (stochastic weight averaging).

    python scripts/average_checkpoints.py OUT.pt A.pt B.pt [C.pt ...] [--val-pack data/pack.npz]

(or ``python -m msrnet_napari.training.average ...``).

All inputs must share one config (same architecture and exposure settings). The
average of points along one trajectory is a flatter, less noisy solution than any
single point (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima").
Needs torch (the [train] extra) to write the checkpoint. With ``--val-pack`` the
average is validated like the trainer does (held-out images of the pack, levels
1-4, 256-pixel centre crops) and the result stored as val_psnr / val_ssim /
val_levels.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..checkpoint import load_checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    val_pack = None
    if "--val-pack" in argv:
        i = argv.index("--val-pack")
        val_pack, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out, paths = Path(argv[0]), argv[1:]
    ckpts = [load_checkpoint(p) for p in paths]
    config = ckpts[0].config
    for p, c in zip(paths, ckpts):
        if c.config != config:
            raise SystemExit(f"{p}: config {c.config} differs from {config}")
    import torch

    from .model import MSRNet, save_checkpoint

    model = MSRNet(config)
    mean = {k: torch.from_numpy(np.mean([c.weights[k] for c in ckpts], axis=0).astype(np.float32))
            for k in ckpts[0].weights}
    model.load_state_dict(mean)
    steps = [c.metadata.get("step") for c in ckpts]
    extra = {}
    if val_pack:
        from .data import load_pack
        from .train import evaluate, make_val_set

        val = evaluate(model, make_val_set(load_pack(val_pack)[1], 256), torch.device("cpu"))
        extra = {"val_psnr": val["psnr"], "val_ssim": val["ssim"], "val_levels": val["levels"]}
        print(f"validation of the average: PSNR {val['psnr']:.3f} SSIM {val['ssim']:.4f} "
              + " ".join(f"L{k}:{v[0]:.2f}/{v[1]:.3f}" for k, v in val["levels"].items()))
    save_checkpoint(model, out, averaged_from=[str(p) for p in paths], averaged_steps=steps,
                    step=max(s for s in steps if s is not None), **extra)
    print(f"wrote {out}: mean of {len(ckpts)} checkpoints (steps {steps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
