"""Render before/after crops of the six photo failure modes of issue 11 (docs/PHOTO_FAILURE_MODES.md).

For every mode a few crops of held-out data only - the 30 held-out LOL pairs of the pair split
file and the 12 held-out validation photos that ``benchmarks/eval_quality.py --images ...
--val-images 12`` uses (its own ``load_val`` / ``load_val_pairs`` are called) - are shown as:
the dark input (multiplied by a display gain, printed in the panel), the shipped photo model
(``src/msrnet_napari/weights/msrnet_default.pt``), each ``--weights`` candidate and the
normal-light reference. Each panel carries the crop's artefact metric from
``msrnet_napari.training.metrics`` (called on the crop arrays; lower is better).

Crops are chosen from the reference / input alone by a fixed rule (never from any model's
output), on a 32-pixel grid of 160-pixel windows, at most one crop per image:

1. blotches: the window with the largest share of flat patches (``metrics.flat_mask`` of the
   reference), ties to the lower mean gradient. 2 real LOL pairs + 1 photo darkened to level 4
   (``degrade.darken``, synthetic). Metric: ``blotchiness`` (and ``chroma_noise``).
2. halos: the window with the most pixels of ``metrics.edge_band`` (2-6 px beside a strong
   reference edge). 2 LOL pairs + 1 photo at level 3 (synthetic). Metric: ``halo``.
3. hue: the window with the most saturated reference pixels (the ``hue_shift`` criterion), one of
   them restricted to yellow hues (40-80 degrees). Photos at level 3 (synthetic darkening of
   real colours) + 1 LOL pair. Metric: ``hue_shift`` (degrees).
4. near black: the 2 darkest held-out LOL pairs (real, lowest mean of the low image) and 1 photo
   at the near-black level 5 (exposure 0.004, 8 bits) JPEG-compressed at quality 75 (synthetic);
   flattest window. Metrics: ``chroma_noise``, ``hf_noise`` and the whole image's exposure gain.
5. night lights: photos at level 4 with six small lamps (clipped core + glow) screen-blended
   into the dark input and into the reference (synthetic; the lamps are placed at seeded random
   positions inside the reference's darkest non-black window, which is the crop). Metrics:
   ``halo`` (bloom around the lamps) and the share of the crop that is near-white (luma >= 0.9)
   or clipped (a channel >= 250/255) beyond the reference's share.
6. backlight: photos at level 3 with one large lamp (radius 15 % of the short side, at the
   brightest spot of the blurred reference) blended the same way (synthetic); the whole image is
   shown. Metrics: scene brightness outside the lamp vs the reference in stops (|log2| of the
   mean-luma ratio), and the exposure gain with / without the lamp.

Inputs are given to ``msrnet_napari.enhance`` as uint8 (what a user's 8-bit file gives), one
thread; whole images are enhanced (the exposure gain is a whole-image decision), then cropped.

    python docs/tools/make_failure_crops.py --weights candidates/photo_v2_swa.pt \
        [--weights runs/photo_v3/swa.pt] [--out-dir docs/images/failure_modes]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import os
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[2]  # docs/tools/ -> repository root
DATA = ROOT.parent / "shared" / "data"
CROP = 160  # crop side (5 flat-mask patches of 32)
STRIDE = 32
THUMB = 200  # longest side of the whole-image panels (mode 6)
CLIP = 250 / 255  # a clipped pixel: its largest channel at least this
BRIGHT_LUMA = 0.9  # a near-white (bloomed) output pixel
PAD, LABEL_H, ROW_H, TITLE_H = 8, 30, 20, 26
BG, FG, DIM = (32, 32, 32), (235, 235, 235), (170, 170, 170)
SAME = 0.05  # the reading: a relative difference of the mean metric below this is "same"

MODES = {
    1: "low-frequency 'watercolour' blotches on flat walls / skies",
    2: "halos at strong edges",
    3: "hue shifts of saturated colours",
    4: "near-black inputs with huge gains (quantisation / JPEG)",
    5: "night lights: bloom and clipping",
    6: "one global gain: a bright lamp / backlight keeps the scene dark",
}
PRIMARY = {1: ("blotch", "chroma_noise"), 2: ("halo",), 3: ("hue_shift",),
           4: ("chroma_noise", "hf_noise"), 5: ("halo", "bright_excess_pct", "clip_excess_pct"), 6: ("scene_stops",)}
FLOOR = 0.05  # ... or an absolute difference below this (metric units)


def _font(size: int) -> ImageFont.ImageFont:
    try:  # Pillow >= 10.1: scalable built-in font
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: fixed bitmap font
        return ImageFont.load_default()


def _eval_quality():
    """benchmarks/eval_quality.py as a module (its held-out loaders are reused, not copied)."""
    spec = importlib.util.spec_from_file_location("eval_quality",
                                                  ROOT / "benchmarks" / "eval_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- crop selection

def best_window(score: np.ndarray, size: int = CROP, stride: int = STRIDE,
                tie: np.ndarray | None = None) -> tuple[int, int, float]:
    """(row, col, score) of the ``size`` window on a ``stride`` grid with the largest sum of
    the per-pixel ``score`` (first such window on ties; then the lowest sum of ``tie``)."""
    h, w = score.shape
    if h < size or w < size:
        raise ValueError(f"image {h}x{w} smaller than the {size}-pixel crop")

    def sums(a):
        s = np.zeros((h + 1, w + 1))
        s[1:, 1:] = np.cumsum(np.cumsum(a, 0), 1)
        rs, cs = np.arange(0, h - size + 1, stride), np.arange(0, w - size + 1, stride)
        r, c = np.meshgrid(rs, cs, indexing="ij")
        return r, c, s[r + size, c + size] - s[r, c + size] - s[r + size, c] + s[r, c]

    r, c, total = sums(np.asarray(score, np.float64))
    key = total - (1e-9 * sums(np.asarray(tie, np.float64))[2] if tie is not None else 0.0)
    i = np.unravel_index(int(np.argmax(key)), key.shape)
    return int(r[i]), int(c[i]), float(total[i])


def saturated(ref: np.ndarray, hue_range: tuple[float, float] | None = None) -> np.ndarray:
    """The reference pixels ``metrics.hue_shift`` scores (optionally within a hue range, deg)."""
    from msrnet_napari.training.metrics import SATURATED, _blur, _hue

    rb = _blur(ref, 1.0)
    mx, mn = rb.max(-1), rb.min(-1)
    sat = (mx >= 0.15) & ((mx - mn) >= SATURATED * np.maximum(mx, 1e-6))
    if hue_range is not None:
        hue = np.degrees(_hue(rb)) % 360.0
        sat &= (hue >= hue_range[0]) & (hue <= hue_range[1])
    return sat


def top_windows(refs: dict[str, np.ndarray], score_fn, n: int, exclude=()) -> list[tuple]:
    """The ``n`` images with the best window of ``score_fn(ref) -> (score map, tie map)``:
    [(name, row, col, score)], best first, one window per image."""
    found = []
    for name, ref in refs.items():
        if name in exclude:
            continue
        score, tie = score_fn(ref)
        r, c, s = best_window(score, tie=tie)
        found.append((name, r, c, s))
    found.sort(key=lambda t: (-t[3], t[0]))
    return found[:n]


def _flat_score(ref):
    from msrnet_napari.training.metrics import _gradient, flat_mask, luma

    return flat_mask(ref).astype(np.float64), _gradient(luma(ref))


def _edge_score(ref):
    from msrnet_napari.training.metrics import edge_band

    return edge_band(ref).astype(np.float64), None


# ----------------------------------------------------------------------------- synthetic cases

def jpeg(img_u8: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img_u8).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def lamp_profile(shape, centres, radius: float, glow: float) -> np.ndarray:
    """HxW in [0, 1]: discs of ``radius`` at 1 (clipped core) with a Gaussian glow of sigma
    ``glow`` (peak 0.6) around them."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    p = np.zeros(shape[:2])
    for cy, cx in centres:
        d = np.hypot(yy - cy, xx - cx)
        p = np.maximum(p, np.where(d <= radius, 1.0, 0.6 * np.exp(-0.5 * ((d - radius) / glow) ** 2)))
    return p


def screen(img: np.ndarray, p: np.ndarray, colour=(1.0, 0.9, 0.7)) -> np.ndarray:
    """Screen-blend a warm lamp of coverage ``p`` (HxW) into ``img`` (HxWx3 in [0, 1])."""
    lamp = p[..., None] * np.asarray(colour)[None, None]
    return 1.0 - (1.0 - img) * (1.0 - lamp)


def u8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0, 1) * 255.0).astype(np.uint8)


def build_cases(photos: dict[str, np.ndarray], pairs: dict[str, tuple]) -> list[dict]:
    """All crops: dicts with mode, source, name, dark (uint8), ref (float), box, extras."""
    from msrnet_napari.training.degrade import NEAR_BLACK_LEVEL, darken, to_float
    from msrnet_napari.training.metrics import _blur, luma

    pref = {f"LOL {s}": to_float(hi) for s, (_, hi) in pairs.items()}
    plow = {f"LOL {s}": lo for s, (lo, _) in pairs.items()}
    fref = {n: to_float(im) for n, im in photos.items()}
    cases = []

    def add(mode, name, dark, ref, box, synthetic, note, **extra):
        cases.append(dict(mode=mode, name=name, dark=dark, ref=ref, box=box,
                          synthetic=synthetic, note=note, **extra))

    def real(mode, picks):
        for name, r, c, _ in picks:
            add(mode, name, plow[name], pref[name], (r, c, CROP, CROP), False, "real LOL pair")

    def synth(mode, picks, level, note):
        for name, r, c, _ in picks:
            add(mode, name, darken(photos[name], level), fref[name], (r, c, CROP, CROP), True, note)

    # 1 blotches, 2 halos
    real(1, top_windows(pref, _flat_score, 2))
    synth(1, top_windows(fref, _flat_score, 1), 4, "photo, synthetic darkening level 4")
    real(2, top_windows(pref, _edge_score, 2))
    synth(2, top_windows(fref, _edge_score, 1), 3, "photo, synthetic darkening level 3")
    # 3 hue: most saturated yellow, most saturated (another photo), most saturated LOL pair
    yellow = top_windows(fref, lambda r: (saturated(r, (40.0, 80.0)), None), 1)
    anysat = top_windows(fref, lambda r: (saturated(r), None), 1, exclude={yellow[0][0]})
    synth(3, yellow, 3, "photo, most saturated yellow, synthetic darkening level 3")
    synth(3, anysat, 3, "photo, most saturated, synthetic darkening level 3")
    real(3, top_windows(pref, lambda r: (saturated(r), None), 1))
    # 4 near black: the two darkest real pairs, one synthetic near-black JPEG photo
    darkest = sorted(pairs, key=lambda s: (float(pairs[s][0].mean()), s))[:2]
    real(4, top_windows({f"LOL {s}": pref[f"LOL {s}"] for s in darkest}, _flat_score, 2))
    for name, r, c, _ in top_windows(fref, _flat_score, 1):
        add(4, name, jpeg(darken(photos[name], NEAR_BLACK_LEVEL)), fref[name], (r, c, CROP, CROP),
            True, "photo, synthetic: exposure 0.004, 8 bits, JPEG q75")
    names = sorted(photos)
    # 5 night lights: in the darkest non-black window of the reference, six seeded lamps
    for name in names[0::4]:
        ref = fref[name]
        y = luma(ref)
        score = np.where(y >= 0.03, 1.0 - y, -1.0)  # dark but not black
        r, c, _ = best_window(score)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        centres = [(r + 16 + rng.uniform(0, CROP - 32), c + 16 + rng.uniform(0, CROP - 32))
                   for _ in range(6)]
        p = lamp_profile(ref.shape, centres, radius=3.0, glow=6.0)
        dark = u8(screen(to_float(darken(photos[name], 4)), p))
        add(5, name, dark, screen(ref, p), (r, c, CROP, CROP), True,
            "photo, synthetic: level 4 + 6 lamps")
    # 6 backlight: one big lamp at the brightest spot of the blurred reference, whole image
    for name in names[2::4]:
        ref = fref[name]
        h, w = ref.shape[:2]
        rad = 0.15 * min(h, w)
        b = _blur(luma(ref), rad)
        cy, cx = np.unravel_index(int(np.argmax(b)), b.shape)
        p = lamp_profile(ref.shape, [(cy, cx)], radius=rad, glow=rad / 3)
        plain = darken(photos[name], 3)
        dark = u8(screen(to_float(plain), p))
        add(6, name, dark, screen(ref, p), (0, 0, h, w), True,
            "photo, synthetic: level 3 + one large lamp (whole image)",
            plain=plain, scene=p < 0.01)
    return cases


# ----------------------------------------------------------------------------- metrics

def crop_of(a: np.ndarray, box) -> np.ndarray:
    r, c, h, w = box
    return a[r:r + h, c:c + w]


def case_metrics(case: dict, out: np.ndarray, weights) -> dict[str, float]:
    from msrnet_napari import exposure_gain_for
    from msrnet_napari.training.degrade import to_float
    from msrnet_napari.training.metrics import (
        blotchiness,
        chroma_noise,
        halo,
        hf_noise,
        hue_shift,
        luma,
    )

    mode, ref = case["mode"], case["ref"]
    o, rc = crop_of(to_float(out), case["box"]), crop_of(ref, case["box"])
    if mode == 1:
        return {"blotch": blotchiness(rc, o), "chroma_noise": chroma_noise(rc, o)}
    if mode == 2:
        return {"halo": halo(rc, o)}
    if mode == 3:
        return {"hue_shift": hue_shift(rc, o)}
    if mode == 4:
        return {"chroma_noise": chroma_noise(rc, o), "hf_noise": hf_noise(rc, o),
                "gain": float(exposure_gain_for(case["dark"], weights=weights))}
    if mode == 5:
        def excess(f, t):
            return 100.0 * float((f(o) >= t).mean() - (f(rc) >= t).mean())
        return {"bright_excess_pct": excess(luma, BRIGHT_LUMA),
                "clip_excess_pct": excess(lambda a: a.max(-1), CLIP),
                "halo": halo(rc, o)}
    scene = case["scene"]
    ratio = float(luma(o)[scene].mean() / max(luma(rc)[scene].mean(), 1e-6))
    return {"scene_stops": abs(math.log2(max(ratio, 1e-6))), "scene_ratio": ratio,
            "gain": float(exposure_gain_for(case["dark"], weights=weights)),
            "gain_no_lamp": float(exposure_gain_for(case["plain"], weights=weights))}


def input_metrics(case: dict) -> dict[str, float]:
    """Context for the input column: its clipped share (mode 5)."""
    from msrnet_napari.training.degrade import to_float
    from msrnet_napari.training.metrics import luma

    if case["mode"] != 5:
        return {}
    d, rc = crop_of(to_float(case["dark"]), case["box"]), crop_of(case["ref"], case["box"])
    return {f"{who}_{name}_pct": 100.0 * float(((luma(a) if name == "bright" else a.max(-1))
                                                 >= t).mean())
            for who, a in (("input", d), ("reference", rc))
            for name, t in (("bright", BRIGHT_LUMA), ("clipped", CLIP))}


def fmt(mode: int, m: dict) -> str:
    if mode == 1:
        return f"blotch {m['blotch']:.2f}\nchroma {m['chroma_noise']:.2f}"
    if mode == 2:
        return f"halo {m['halo']:.2f}"
    if mode == 3:
        return f"hue shift {m['hue_shift']:.1f} deg"
    if mode == 4:
        return f"chroma {m['chroma_noise']:.2f} HF {m['hf_noise']:.2f}\ngain {m['gain']:.0f}"
    if mode == 5:
        return (f"bright {m['bright_excess_pct']:+.1f}% clip {m['clip_excess_pct']:+.1f}%\n"
                f"halo {m['halo']:.2f}")
    return f"scene x{m['scene_ratio']:.2f} of ref\ngain {m['gain']:.1f} (no lamp {m['gain_no_lamp']:.1f})"


# ----------------------------------------------------------------------------- rendering

def display(a_u8_or_float: np.ndarray, box, thumb: bool, gain: float = 1.0) -> Image.Image:
    from msrnet_napari.training.degrade import to_float

    a = np.clip(crop_of(to_float(a_u8_or_float), box) * gain, 0, 1)
    pil = Image.fromarray(u8(a))
    if thumb and max(pil.size) > THUMB:
        s = THUMB / max(pil.size)
        pil = pil.resize((round(pil.width * s), round(pil.height * s)), Image.LANCZOS)
    return pil


def display_gain(case: dict) -> float:
    """Display-only gain of the input panel: crop mean luma to ~0.35, 1..64, rounded."""
    from msrnet_napari.training.degrade import to_float
    from msrnet_napari.training.metrics import luma

    m = float(luma(crop_of(to_float(case["dark"]), case["box"])).mean())
    return float(np.clip(round(0.35 / max(m, 1e-4)), 1, 64))


def render(mode: int, rows: list[dict], labels: list[str], path: Path, quality: int) -> int:
    small, title = _font(12), _font(15)
    cols = ["input (display gain)"] + labels + ["normal-light reference"]
    panels = []
    for row in rows:
        case, thumb = row["case"], mode == 6
        k = display_gain(case)
        ims = [(display(case["dark"], case["box"], thumb, k), f"input x{k:g} (display only)")]
        for lab in labels:
            ims.append((display(row["outputs"][lab], case["box"], thumb), fmt(mode, row["metrics"][lab])))
        ims.append((display(case["ref"], case["box"], thumb), "reference"
                    + (" (+ synthetic lamps)" if mode in (5, 6) else "")))
        panels.append(ims)
    pw = max(p.width for ims in panels for p, _ in ims)
    ph = [max(p.height for p, _ in ims) for ims in panels]
    width = PAD + len(cols) * (pw + PAD)
    height = TITLE_H + ROW_H + sum(ROW_H + h + LABEL_H for h in ph) + PAD
    canvas = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, 6), f"mode {mode}: {MODES[mode]}", fill=FG, font=title)
    for j, col in enumerate(cols):
        draw.text((PAD + j * (pw + PAD), TITLE_H), col, fill=FG, font=small)
    y = TITLE_H + ROW_H
    for row, ims, h in zip(rows, panels, ph):
        case = row["case"]
        r, c, bh, bw = case["box"]
        where = "whole image" if mode == 6 else f"crop y={r} x={c}"
        tag = "SYNTHETIC" if case["synthetic"] else "real"
        draw.text((PAD, y + 3), f"{case['name']} - {case['note']} - {where} [{tag}]",
                  fill=DIM, font=small)
        y += ROW_H
        for j, (pil, text) in enumerate(ims):
            x = PAD + j * (pw + PAD)
            canvas.paste(pil, (x, y))
            draw.text((x, y + h + 4), text, fill=FG, font=small)
        y += h + LABEL_H
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=quality, subsampling=0, optimize=True)
    return path.stat().st_size


def label_of(weights: str) -> str:
    p = Path(weights)
    return p.name if p.parent.name in ("candidates", "weights", "") else f"{p.parent.name}/{p.name}"


def reading(rows: list[dict], key: str, shipped: str, cand: str) -> tuple[str, float, float]:
    """better / same / worse of the candidate's mean ``key`` over the crops vs the shipped one."""
    a = float(np.nanmean([r["metrics"][shipped][key] for r in rows]))
    b = float(np.nanmean([r["metrics"][cand][key] for r in rows]))
    if abs(b - a) < max(SAME * abs(a), FLOOR):
        return "same", a, b
    return ("better" if b < a else "worse"), a, b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", action="append", default=[], required=True,
                        help="candidate checkpoint (repeatable), shown beside the shipped model")
    parser.add_argument("--shipped", default=None,
                        help="the model to compare against (default: the bundled photo model)")
    parser.add_argument("--out-dir", default=str(ROOT / "docs" / "images" / "failure_modes"))
    parser.add_argument("--pairs", default=str(DATA / "lol_train"))
    parser.add_argument("--pair-splits", default=str(ROOT / "candidates" / "photo_v2_pair_splits.json"))
    parser.add_argument("--images", action="append",
                        help="photo folders (default: ../shared/data/photos/{bsds,sun_hays80})")
    parser.add_argument("--val-images", type=int, default=12)
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the grids")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import msrnet_napari
    from msrnet_napari.weights import default_weights_path

    eq = _eval_quality()
    images = args.images or [str(DATA / "photos" / "bsds"), str(DATA / "photos" / "sun_hays80")]
    photos = eq.load_val(SimpleNamespace(images=images, pack=None, val_images=args.val_images,
                                         splits="", limit=0, max_side=args.max_side))
    pairs = eq.load_val_pairs(SimpleNamespace(pairs=args.pairs, pair_splits=args.pair_splits,
                                              pair_val=0, limit=0))
    print(f"{len(photos)} held-out photos, {len(pairs)} held-out pairs", file=sys.stderr)
    shipped = args.shipped or str(default_weights_path())
    models = {f"shipped {Path(shipped).name}": shipped}
    models.update({label_of(w): w for w in args.weights})
    labels = list(models)

    cases = build_cases(photos, pairs)
    results: dict[int, list[dict]] = {}
    t0 = time.perf_counter()
    for case in cases:
        row = {"case": case, "outputs": {}, "metrics": {}}
        for lab, w in models.items():
            out = msrnet_napari.enhance(case["dark"], weights=w, rgb=True, threads=args.threads)
            row["outputs"][lab] = out
            row["metrics"][lab] = case_metrics(case, out, w)
        row["input"] = input_metrics(case)
        results.setdefault(case["mode"], []).append(row)
        print(f"  mode {case['mode']} {case['name']}: "
              + "; ".join(f"{lab}: " + fmt(case["mode"], m).replace("\n", ", ") for lab, m in row["metrics"].items()),
              file=sys.stderr)
    print(f"enhanced {len(cases)} images x {len(models)} models in "
          f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)

    out_dir = Path(args.out_dir)
    total = 0
    table = {"models": {k: os.path.relpath(v, ROOT) for k, v in models.items()},
             "primary_metric": PRIMARY, "same_tolerance": SAME, "modes": {}}
    md = ["Per-crop metrics, computed on the crop (lower is better; mode 5 bright / clip = "
          "share of the crop with luma >= 0.9 / a channel >= 250/255 beyond the reference's; mode 6 "
          "scene = mean luma outside the lamp / the reference's, scene_stops = |log2| of it). "
          "Reading: the candidate's mean over the crops vs the shipped model's, 'same' within "
          f"{SAME:.0%} or {FLOOR} units.", ""]
    for mode, rows in sorted(results.items()):
        path = out_dir / f"mode{mode}.jpg"
        total += render(mode, rows, labels, path, args.quality)
        entry = {"title": MODES[mode], "image": os.path.relpath(path, ROOT), "crops": []}
        for row in rows:
            case = row["case"]
            entry["crops"].append({"name": case["name"], "note": case["note"],
                                   "synthetic": case["synthetic"], "box": list(case["box"]),
                                   "input": row["input"], "metrics": row["metrics"]})
        entry["reading"] = {}
        md += [f"### Mode {mode}: {MODES[mode]}", "",
               "| crop | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for row in rows:
            case = row["case"]
            tag = "synthetic" if case["synthetic"] else "real"
            md.append(f"| {case['name']} ({tag}) | "
                      + " | ".join(fmt(mode, row["metrics"][lab]).replace("\n", ", ") for lab in labels) + " |")
        for key in PRIMARY[mode]:
            means = [f"{float(np.nanmean([row['metrics'][lab][key] for row in rows])):.2f}"
                     for lab in labels]
            md.append(f"| **mean {key}** | " + " | ".join(means) + " |")
        for lab in labels[1:]:
            parts = []
            for key in PRIMARY[mode]:
                word, a, b = reading(rows, key, labels[0], lab)
                entry["reading"].setdefault(lab, {})[key] = {"verdict": word, "shipped": a,
                                                             "candidate": b}
                parts.append(f"{key} **{word}** ({a:.2f} -> {b:.2f})")
            md += ["", f"Reading, {lab} vs {labels[0]}: " + ", ".join(parts) + "."]
        md.append("")
        table["modes"][str(mode)] = entry
    (out_dir / "failure_metrics.json").write_text(json.dumps(table, indent=1) + "\n")
    (out_dir / "failure_metrics.md").write_text("\n".join(md))
    print("\n".join(md))
    print(f"wrote {len(results)} grids to {out_dir} ({total / 1024:.0f} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
