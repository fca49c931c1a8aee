"""Render docs/images/before_after.png: two bundled samples before and after
``msrnet_napari.enhance()`` with the bundled models, each chosen by the data.

Row 1: the dark astronaut photo (``_sample_data.dark_photo``) and its enhancement by the
photo model (brightened: photos are viewed by eye).
Row 2: the real 12-bit fluorescence sample (BBBC022 U2OS, Hoechst channel,
``_sample_data.u2os_cells``) and its restoration by the microscopy model (linear, in the
input's units: denoised, background and intensities kept), both displayed with the SAME
range (the sample's contrast limits, as napari shows them), so before and after compare
at one display.

Needs only numpy and Pillow (no matplotlib)::

    python docs/tools/make_before_after.py [--out docs/images/before_after.png] [--weights ckpt.pt]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[2]  # docs/tools/ -> repository root
PAD = 12
LABEL_H = 24
TITLE_H = 30
BG = (32, 32, 32)
FG = (235, 235, 235)


def _font(size: int) -> ImageFont.ImageFont:
    try:  # Pillow >= 10.1: scalable built-in font
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: fixed bitmap font
        return ImageFont.load_default()


def _to_rgb8(array: np.ndarray, white: float) -> np.ndarray:
    """Display mapping: 0..white -> 0..255 (linear, clipped); gray -> RGB."""
    scaled = np.clip(array.astype(np.float64) / white, 0.0, 1.0)
    out = np.rint(scaled * 255.0).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return out[..., :3]


def _panel(image: np.ndarray, size: int) -> Image.Image:
    pil = Image.fromarray(image)
    if max(pil.size) != size:
        scale = size / max(pil.size)
        pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.LANCZOS)
    return pil


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "before_after.png"))
    parser.add_argument("--weights", help="photo checkpoint instead of the bundled photo model")
    parser.add_argument("--size", type=int, default=512, help="panel edge in pixels")
    args = parser.parse_args(argv)

    import msrnet_napari
    from msrnet_napari import _sample_data
    weights_label = Path(args.weights).name if args.weights else "bundled models"
    rows = []

    photo, photo_meta, _ = _sample_data.dark_photo()[0]
    t0 = time.perf_counter()
    photo_kw = {"weights": args.weights} if args.weights else {"model": "photo"}
    photo_out = msrnet_napari.enhance(photo, rgb=True, **photo_kw)
    t_photo = time.perf_counter() - t0
    rows.append((
        (_to_rgb8(photo, 255), f"input: {photo_meta['name']}, uint8, mean {photo.mean():.1f}/255"),
        (_to_rgb8(photo_out, 255), f"photo model: mean {photo_out.mean():.1f}/255"),
    ))

    fluo, fluo_meta, _ = _sample_data.u2os_cells()[0]
    lo, hi = fluo_meta["contrast_limits"]
    t0 = time.perf_counter()
    fluo_out = msrnet_napari.enhance(fluo, model="microscopy", rgb=False)
    t_fluo = time.perf_counter() - t0
    rows.append((
        (_to_rgb8(fluo - lo, hi - lo),
         f"input: {fluo_meta['name']}, shown {lo:g}..{hi:g}, mean {fluo.mean():.0f}"),
        (_to_rgb8(fluo_out.astype(np.float64) - lo, hi - lo),
         f"microscopy model: shown {lo:g}..{hi:g}, mean {fluo_out.mean():.0f}"),
    ))
    print(f"enhanced photo {photo.shape} in {t_photo:.1f}s, fluorescence {fluo.shape} in {t_fluo:.1f}s")

    panels = [[(_panel(img, args.size), text) for img, text in row] for row in rows]
    col_w = [max(row[c][0].width for row in panels) for c in range(2)]
    row_h = [max(p.height for p, _ in row) for row in panels]
    width = PAD * 3 + sum(col_w)
    height = TITLE_H + sum(h + LABEL_H + PAD for h in row_h) + PAD
    canvas = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, 8), f"msrnet-napari: before / after msrnet_napari.enhance() ({weights_label})",
              fill=FG, font=_font(16))
    small = _font(13)
    y = TITLE_H
    for row, h in zip(panels, row_h):
        x = PAD
        for (pil, text), w in zip(row, col_w):
            draw.text((x, y + 4), text, fill=FG, font=small)
            canvas.paste(pil, (x, y + LABEL_H))
            x += w + PAD
        y += LABEL_H + h + PAD

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)
    print(f"wrote {out} ({width}x{height}, {out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
