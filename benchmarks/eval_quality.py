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

v2 additions (issue 11):

* ``--pairs DIR`` (``low/`` + ``high/``, e.g. ``../shared/data/lol_train``): the fixed
  held-out real pairs (``--pair-splits`` file, else the trainer's stem-hash rule,
  ``--pair-val`` pairs) - a table of PSNR / SSIM / GT-mean PSNR (the output scaled so
  that its mean matches the reference's, per image) on whole images.
* a GT-mean PSNR column in the synthetic table.
* artefact metrics (``msrnet_napari.training.metrics``) on a smooth-sky / flat-wall crop
  set chosen automatically (low-gradient 32-pixel patches of the reference): (a)
  low-frequency chroma noise, (b) blotches (low-frequency luma error), (c) halo at strong
  reference edges, (d) hue shift of saturated pixels, all in 8-bit codes (hue: degrees),
  on the real pairs and on the synthetic levels 3-4; (e) near black: on the darkest
  inputs (synthetic near-black level 5, exposure 0.004, and the darkest third of the
  held-out pairs) the largest exposure gain used and the noise amplification
  (high-frequency noise of the output / of the input, in the flat patches).
* ``--exposure-variant NAME:key=value,...`` (repeatable): the same weights with another
  photo exposure rule (MSRNetConfig fields, e.g. ``robust:exposure_statistic=robust``)
  as extra MSR-net and "exposure only" rows - how the rule was chosen.

    python benchmarks/eval_quality.py --images ../shared/data/photos/bsds \
        --images ../shared/data/photos/sun_hays80 --val-images 12 --max-side 512 \
        --pairs ../shared/data/lol_train --weights runs/photo_v2/swa.pt
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
from msrnet_napari.training.degrade import DARKEN_LEVELS, NEAR_BLACK_LEVEL, darken, to_float  # noqa: E402
from msrnet_napari.training.metrics import artefacts, gt_mean_psnr, psnr, ssim  # noqa: E402

ARTEFACT_KEYS = ("chroma_noise", "blotch", "halo", "hue_shift")


def _nanmean(values) -> float:
    """np.nanmean, NaN (without numpy's RuntimeWarning) when no value is a number."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")


def shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    if not max_side or max(img.shape[:2]) <= max_side:
        return img
    from PIL import Image

    h, w = img.shape[:2]
    s = max_side / max(h, w)
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                  Image.LANCZOS))


def load_val(args) -> dict[str, np.ndarray]:
    from msrnet_napari.training.data import load_dataset, load_folder, load_pack

    images = args.images or [str(ROOT / "data" / "images")]
    if args.pack:
        _, val = load_pack(args.pack)
    elif len(images) == 1 and not args.val_images:
        _, val = load_folder(images[0], args.splits if os.path.exists(args.splits) else None)
    else:
        _, val = load_dataset(images=images, val_count=args.val_images)
    names = sorted(val)[: args.limit] if args.limit else sorted(val)
    return {n: shrink(val[n], args.max_side) for n in names}


def load_val_pairs(args) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The held-out real pairs (never trained on): the split file if given and present,
    else the trainer's fixed stem-hash rule."""
    from msrnet_napari.training.data import PAIR_VAL_COUNT, load_pairs

    split = args.pair_splits if args.pair_splits and os.path.exists(args.pair_splits) else None
    _, val = load_pairs(args.pairs, split, args.pair_val or PAIR_VAL_COUNT)
    names = sorted(val)[: args.limit] if args.limit else sorted(val)
    return {n: val[n] for n in names}


def variant_checkpoint(weights, spec: str):
    """(label, Checkpoint) of ``weights`` with the exposure fields of ``spec``
    (``NAME:key=value,key=value``) replaced in its config."""
    import dataclasses

    from msrnet_napari.weights import resolve_weights

    name, _, body = spec.partition(":")
    ckpt = resolve_weights(weights)
    fields = {f.name: f for f in dataclasses.fields(ckpt.config)}
    changes = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in fields:
            raise SystemExit(f"--exposure-variant {spec!r}: unknown config field {key!r}")
        default = getattr(ckpt.config, key)
        changes[key] = type(default)(value) if not isinstance(default, str) else value
    return name, dataclasses.replace(ckpt, config=dataclasses.replace(ckpt.config, **changes))


def make_msrnet(weights, engine: str, threads: int, device: str, tile: int):
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

        from msrnet_napari.training.model import MSRNet, model_from_checkpoint
        from msrnet_napari.weights import resolve_weights

        if threads:
            torch.set_num_threads(threads)
        dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available()
                           else "cpu")
        if isinstance(weights, (str, os.PathLike)):
            model = model_from_checkpoint(weights).to(dev)
        else:
            ckpt = resolve_weights(weights)
            model = MSRNet(ckpt.config)
            model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ckpt.weights.items()})
            model = model.eval().to(dev)

        def run(dark: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(dark.transpose(2, 0, 1)))[None].to(dev)
            with torch.no_grad():
                y = model(x)[0]
            return y.permute(1, 2, 0).cpu().numpy()
    return run, engine


def make_exposure_only(weights):
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
    p.add_argument("--images", action="append",
                   help="folder (tree) of photos, repeatable (default data/images)")
    p.add_argument("--val-images", type=int, default=0,
                   help="as msrnet-train --val-images: the held-out photos of those folders")
    p.add_argument("--pairs", help="real pairs folder (low/, high/): held-out pairs table")
    p.add_argument("--pair-splits", help="the trainer's pair split file (default: the rule)")
    p.add_argument("--pair-val", type=int, default=0, help="held-out pairs (default 30)")
    p.add_argument("--exposure-variant", action="append", default=[],
                   help="NAME:key=value,... - the weights with another exposure rule")
    p.add_argument("--no-artefacts", action="store_true", help="skip the artefact metrics")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic table")
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
    entries = []  # (label suffix, weights or Checkpoint)
    for w in weights:
        tag = "" if len(weights) == 1 else f"{Path(w).parent.name}/{Path(w).name}"
        entries.append((tag, w))
        for spec in args.exposure_variant:
            name, ckpt = variant_checkpoint(w, spec)
            entries.append((f"{tag} {name}".strip(), ckpt))
    gain_of: dict[str, object] = {}  # label -> weights, to look up the gain used
    for tag, w in entries:
        label = f"MSR-net ({tag})" if tag else "MSR-net"
        run, engine = make_msrnet(w, args.engine, args.threads, args.device, args.tile)
        methods[label] = run
        gain_of[label] = w
        print(f"{label}: {w if isinstance(w, str) else w.config} via {engine}", file=sys.stderr)
    msr_labels = list(methods)
    ablations: dict[str, str] = {}  # ablation label -> its MSR-net label
    if not args.no_ablation:
        for (tag, w), lab in zip(entries, msr_labels):
            fn = make_exposure_only(w)
            if fn is not None:
                name = f"exposure only ({tag})" if tag else "exposure only"
                methods[name] = fn
                ablations[name] = lab
                gain_of[name] = w
    for name in args.methods:
        methods[name] = BASELINES[name]

    def gain_used(m: str, dark: np.ndarray) -> float:
        if m not in gain_of:
            return float("nan")
        from msrnet_napari import exposure_gain_for

        return float(exposure_gain_for(dark, weights=gain_of[m]))

    want_art = not args.no_artefacts
    art: dict[str, dict[str, list[dict]]] = {m: {} for m in methods}  # method -> set -> rows
    px = sum(a.shape[0] * a.shape[1] for a in val.values()) / 1e6
    scores: dict[str, dict[int, list[tuple[float, float, float]]]] = {m: {} for m in methods}
    seconds = {m: 0.0 for m in methods}
    if args.no_synthetic:
        val = {}
    print(f"{len(val)} held-out images ({px:.1f} MP), levels {args.levels}", file=sys.stderr)
    art_levels = [lv for lv in (3, 4) if lv in args.levels]
    for name, img in val.items():
        bright = to_float(img)
        levels = list(args.levels) + ([NEAR_BLACK_LEVEL] if want_art else [])
        for level in levels:
            dark = darken(bright, level)
            for m, fn in methods.items():
                t = time.perf_counter()
                out = np.clip(np.asarray(fn(dark), dtype=np.float32), 0, 1)
                if level in args.levels:
                    seconds[m] += time.perf_counter() - t
                    scores[m].setdefault(level, []).append(
                        (psnr(bright, out), ssim(bright, out), gt_mean_psnr(bright, out)))
                if want_art and (level in art_levels or level == NEAR_BLACK_LEVEL):
                    key = "near-black" if level == NEAR_BLACK_LEVEL else "synthetic L3-4"
                    art[m].setdefault(key, []).append(
                        artefacts(bright, out, dark=dark, gain=gain_used(m, dark)))
        print(f"  {name} done", file=sys.stderr)

    mean = {m: {lv: tuple(float(x) for x in np.mean(v, axis=0)) for lv, v in d.items()}
            for m, d in scores.items()}
    names = {1: "mild", 2: "moderate", 3: "dark", 4: "very dark"}
    if val:
        head = "| method | " + " | ".join(
            f"L{lv} {names.get(lv, '')} (exp. {DARKEN_LEVELS[lv][0]:g})" for lv in args.levels
        ) + " | mean | GT-mean PSNR | s/MP |"
        print(f"\nMean PSNR (dB) / SSIM on {len(val)} held-out images\n")
        print(head)
        print("|" + "---|" * (len(args.levels) + 4))
        for m in methods:
            cells = [f"{mean[m][lv][0]:.2f} / {mean[m][lv][1]:.3f}" for lv in args.levels]
            mp = np.mean([mean[m][lv][0] for lv in args.levels])
            ms = np.mean([mean[m][lv][1] for lv in args.levels])
            mg = np.mean([mean[m][lv][2] for lv in args.levels])
            per_mp = seconds[m] / (px * len(args.levels))
            print(f"| {m} | " + " | ".join(cells)
                  + f" | {mp:.2f} / {ms:.3f} | {mg:.2f} | {per_mp:.2f} |")
        print()

    pair_mean: dict[str, tuple[float, float, float]] = {}
    if args.pairs:
        pairs = load_val_pairs(args)
        lows = {s: float(to_float(lo).mean()) for s, (lo, _) in pairs.items()}
        darkest = set(sorted(lows, key=lows.get)[: max(1, len(lows) // 3)])
        rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
        for stem, (low, high) in pairs.items():
            lo, hi = to_float(low), to_float(high)
            for m, fn in methods.items():
                out = np.clip(np.asarray(fn(lo), dtype=np.float32), 0, 1)
                rows[m].append((psnr(hi, out), ssim(hi, out), gt_mean_psnr(hi, out)))
                if want_art:
                    a = artefacts(hi, out, dark=lo, gain=gain_used(m, lo))
                    art[m].setdefault("pairs", []).append(a)
                    if stem in darkest:
                        art[m].setdefault("near-black", []).append(a)
            print(f"  pair {stem} done", file=sys.stderr)
        pair_mean = {m: tuple(float(x) for x in np.mean(v, axis=0)) for m, v in rows.items()}
        print(f"\nHeld-out real pairs ({len(pairs)} LOL pairs, never trained on; whole images)\n")
        print("| method | PSNR | SSIM | GT-mean PSNR |")
        print("|---|---|---|---|")
        for m in methods:
            p_, s_, g_ = pair_mean[m]
            print(f"| {m} | {p_:.2f} | {s_:.3f} | {g_:.2f} |")
        print()

    art_mean: dict[str, dict[str, dict[str, float]]] = {}
    if want_art and any(art[m] for m in methods):
        sets = [k for k in ("pairs", "synthetic L3-4") if any(k in art[m] for m in methods)]
        for m in methods:
            art_mean[m] = {}
            for k, v in art[m].items():
                keys = v[0].keys()
                art_mean[m][k] = {key: _nanmean([r[key] for r in v]) for key in keys
                                  if key != "gain"}
                gains = [r["gain"] for r in v if r.get("gain") == r.get("gain")]
                art_mean[m][k]["max_gain"] = float(max(gains)) if gains else float("nan")
        print("Artefacts (codes of 8 bits; hue in degrees; lower is better): chroma noise / "
              "blotch / halo / hue shift\n")
        print("| method | " + " | ".join(sets) + " | near black: max gain, noise ampl., "
              "HF noise |")
        print("|---|" + "---|" * (len(sets) + 1))
        for m in methods:
            cells = []
            for k in sets:
                a = art_mean[m].get(k)
                cells.append(" / ".join(f"{a[x]:.2f}" for x in ARTEFACT_KEYS) if a else "-")
            nb = art_mean[m].get("near-black")
            nb_cell = (f"{nb['max_gain']:.0f}, {nb['noise_amplification']:.2f}, "
                       f"{nb['hf_noise']:.2f}" if nb else "-")
            print(f"| {m} | " + " | ".join(cells) + f" | {nb_cell} |")
        print()
    verdict = {}
    for lab in (msr_labels if val else []):
        base = [m for m in methods if m not in msr_labels and m not in ablations]
        wins_p = all(mean[lab][lv][0] > max(mean[b][lv][0] for b in base) for lv in args.levels)
        wins_s = all(mean[lab][lv][1] > max(mean[b][lv][1] for b in base) for lv in args.levels)
        verdict[lab] = {"psnr": wins_p, "ssim": wins_s}
        print(f"{lab} beats all baselines at every level: PSNR {'YES' if wins_p else 'NO'}, "
              f"SSIM {'YES' if wins_s else 'NO'}")
    for abl, lab in (ablations.items() if val else []):
        gains = ", ".join(f"L{lv} {mean[lab][lv][0] - mean[abl][lv][0]:+.2f} dB / "
                          f"{mean[lab][lv][1] - mean[abl][lv][1]:+.3f}" for lv in args.levels)
        print(f"{lab} minus '{abl}' (what the network adds): {gains}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"images": list(val), "levels": args.levels, "weights": weights,
                       "variants": args.exposure_variant,
                       "mean": {m: {str(k): v for k, v in d.items()} for m, d in mean.items()},
                       "pairs": pair_mean, "artefacts": art_mean,
                       "seconds_per_mp": {m: seconds[m] / max(px * len(args.levels), 1e-9)
                                          for m in methods},
                       "beats_all": verdict}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
