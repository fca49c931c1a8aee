#!/usr/bin/env python3
"""Quality of MSR-net vs classical enhancers on the held-out images.

Every validation image (never used for training) is darkened at fixed,
deterministic levels (``msrnet_napari.training.degrade.darken``: 1 mild .. 4 very dark,
sensor model with fixed noise), enhanced by MSR-net and by the baselines of
``msrnet_napari.training.baselines``, and compared with the original: mean PSNR / SSIM
per level (outputs clipped to [0, 1]).

    python benchmarks/eval_quality.py --weights runs/gpu/best.pt                # data/ images+splits
    python benchmarks/eval_quality.py --pack data/pack.npz --weights W.pt --engine torch

``--engine enhance`` uses the package API ``msrnet_napari.enhance`` (compiled
engine); ``torch`` uses the PyTorch reference (``model.model_from_checkpoint``);
``auto`` (default) takes enhance when the compiled engine imports, else torch.
Prints a markdown table and whether MSR-net beats every baseline at every level.

For a model with exposure normalisation an ablation row "exposure only" shows
the model's exposure gain without the network (``--no-ablation`` drops it); it
is part of our method, not a classical baseline, so the verdict ignores it and
a separate line says what the network adds to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from msrnet_napari.training.baselines import BASELINES  # noqa: E402
from msrnet_napari.training.degrade import DARKEN_LEVELS, darken, to_float  # noqa: E402
from msrnet_napari.training.metrics import psnr, ssim  # noqa: E402


def shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    if not max_side or max(img.shape[:2]) <= max_side:
        return img
    from PIL import Image

    h, w = img.shape[:2]
    s = max_side / max(h, w)
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                  Image.LANCZOS))


def load_val(args) -> dict[str, np.ndarray]:
    from msrnet_napari.training.data import load_folder, load_pack

    if args.pack:
        _, val = load_pack(args.pack)
    else:
        _, val = load_folder(args.images, args.splits if os.path.exists(args.splits) else None)
    names = sorted(val)[: args.limit] if args.limit else sorted(val)
    return {n: shrink(val[n], args.max_side) for n in names}


def make_msrnet(weights: str, engine: str, threads: int, device: str, tile: int):
    if engine == "auto":
        try:
            import msrnet_napari._core  # noqa: F401

            engine = "enhance"
        except ImportError:
            engine = "torch"
    if engine == "enhance":
        from msrnet_napari import enhance

        def run(dark: np.ndarray) -> np.ndarray:
            return enhance(dark, weights=weights, tile=tile, threads=threads, device=device)
    else:
        import torch

        from msrnet_napari.training.model import model_from_checkpoint

        if threads:
            torch.set_num_threads(threads)
        dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available()
                           else "cpu")
        model = model_from_checkpoint(weights).to(dev)

        def run(dark: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(dark.transpose(2, 0, 1)))[None].to(dev)
            with torch.no_grad():
                y = model(x)[0]
            return y.permute(1, 2, 0).cpu().numpy()
    return run, engine


def make_exposure_only(weights: str):
    """The model's exposure normalisation alone (no network), or None if it has none."""
    from msrnet_napari import exposure_gain_for
    from msrnet_napari.exposure import apply_exposure_gain
    from msrnet_napari.weights import resolve_weights

    config = resolve_weights(weights).config  # cached: the same load enhance() and the gain use
    if config.exposure_target <= 0:
        return None

    def run(dark: np.ndarray) -> np.ndarray:
        gain = exposure_gain_for(dark, weights=weights)
        return apply_exposure_gain(np.array(dark, dtype=np.float32), gain, config.exposure_space)
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", default=[],
                   help="MSR-net checkpoint (repeatable; default: the bundled weights)")
    p.add_argument("--engine", choices=("auto", "enhance", "torch"), default="auto")
    p.add_argument("--images", default=str(ROOT / "data" / "images"))
    p.add_argument("--splits", default=str(ROOT / "data" / "splits.json"))
    p.add_argument("--pack", help="read the validation images from a data pack instead")
    p.add_argument("--levels", type=int, nargs="+", default=sorted(DARKEN_LEVELS))
    p.add_argument("--max-side", type=int, default=0, help="downscale images first (0 = no)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")
    p.add_argument("--methods", nargs="+", default=list(BASELINES), help="baselines to run")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--no-ablation", action="store_true",
                   help="skip the 'exposure only' rows (exposure normalisation without the network)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    val = load_val(args)
    if not val:
        raise SystemExit("no validation images")
    methods: dict[str, object] = {}
    weights = args.weights
    if not weights:
        from msrnet_napari.weights import default_weights_path

        weights = [str(default_weights_path())]
    for w in weights:
        label = "MSR-net" if len(weights) == 1 else f"MSR-net ({Path(w).parent.name}/{Path(w).name})"
        run, engine = make_msrnet(w, args.engine, args.threads, args.device, args.tile)
        methods[label] = run
        print(f"{label}: {w} via {engine}", file=sys.stderr)
    msr_labels = list(methods)
    ablations: dict[str, str] = {}  # ablation label -> its MSR-net label
    if not args.no_ablation:
        for w, lab in zip(weights, msr_labels):
            fn = make_exposure_only(w)
            if fn is not None:
                name = "exposure only" if len(weights) == 1 else f"exposure only ({lab[9:-1]})"
                methods[name] = fn
                ablations[name] = lab
    for name in args.methods:
        methods[name] = BASELINES[name]

    px = sum(a.shape[0] * a.shape[1] for a in val.values()) / 1e6
    print(f"{len(val)} held-out images ({px:.1f} MP), levels {args.levels}", file=sys.stderr)
    scores: dict[str, dict[int, list[tuple[float, float]]]] = {m: {} for m in methods}
    seconds = {m: 0.0 for m in methods}
    for name, img in val.items():
        bright = to_float(img)
        for level in args.levels:
            dark = darken(bright, level)
            for m, fn in methods.items():
                t = time.perf_counter()
                out = np.clip(np.asarray(fn(dark), dtype=np.float32), 0, 1)
                seconds[m] += time.perf_counter() - t
                scores[m].setdefault(level, []).append((psnr(bright, out), ssim(bright, out)))
        print(f"  {name} done", file=sys.stderr)

    mean = {m: {lv: (float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v])))
                for lv, v in d.items()} for m, d in scores.items()}
    names = {1: "mild", 2: "moderate", 3: "dark", 4: "very dark"}
    head = "| method | " + " | ".join(
        f"L{lv} {names.get(lv, '')} (exp. {DARKEN_LEVELS[lv][0]:g})" for lv in args.levels
    ) + " | mean | s/MP |"
    print(f"\nMean PSNR (dB) / SSIM on {len(val)} held-out images\n")
    print(head)
    print("|" + "---|" * (len(args.levels) + 3))
    for m in methods:
        cells = [f"{mean[m][lv][0]:.2f} / {mean[m][lv][1]:.3f}" for lv in args.levels]
        mp = np.mean([mean[m][lv][0] for lv in args.levels])
        ms = np.mean([mean[m][lv][1] for lv in args.levels])
        per_mp = seconds[m] / (px * len(args.levels))
        print(f"| {m} | " + " | ".join(cells) + f" | {mp:.2f} / {ms:.3f} | {per_mp:.2f} |")
    print()
    verdict = {}
    for lab in msr_labels:
        base = [m for m in methods if m not in msr_labels and m not in ablations]
        wins_p = all(mean[lab][lv][0] > max(mean[b][lv][0] for b in base) for lv in args.levels)
        wins_s = all(mean[lab][lv][1] > max(mean[b][lv][1] for b in base) for lv in args.levels)
        verdict[lab] = {"psnr": wins_p, "ssim": wins_s}
        print(f"{lab} beats all baselines at every level: PSNR {'YES' if wins_p else 'NO'}, "
              f"SSIM {'YES' if wins_s else 'NO'}")
    for abl, lab in ablations.items():
        gains = ", ".join(f"L{lv} {mean[lab][lv][0] - mean[abl][lv][0]:+.2f} dB / "
                          f"{mean[lab][lv][1] - mean[abl][lv][1]:+.3f}" for lv in args.levels)
        print(f"{lab} minus '{abl}' (what the network adds): {gains}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"images": list(val), "levels": args.levels, "weights": weights,
                       "mean": {m: {str(k): v for k, v in d.items()} for m, d in mean.items()},
                       "seconds_per_mp": {m: seconds[m] / (px * len(args.levels)) for m in methods},
                       "beats_all": verdict}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
