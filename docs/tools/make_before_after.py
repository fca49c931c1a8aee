"""Render docs/images/before_after.png: two bundled samples before and after
``msrnet_napari.enhance()`` with the bundled default weights.

Row 1: the dark astronaut photo (``_sample_data.dark_photo``) and its enhancement.
Row 2: the dim 12-bit fluorescence frame (``_sample_data.dim_fluorescence``) and its
enhancement, both displayed with the 12-bit range 0..4095 -> black..white (no
auto-contrast), the sample's contrast limits in napari. The frame is enhanced with
``bit_depth=12`` (its real bit depth): its maximum is only ~445 DN, so without it
``enhance()`` would detect 10 bits (1023 = white) and return 10-bit-scaled values.
Pass ``--fluo-bit-depth 0`` to use the auto-detection instead (the output is then
shown with the detected range).

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
    parser.add_argument("--weights", help="checkpoint to use instead of the bundled default")
    parser.add_argument("--size", type=int, default=512, help="panel edge in pixels")
    parser.add_argument("--fluo-bit-depth", type=int, default=12,
                        help="bit_depth for the fluorescence frame (0 = auto-detect)")
    args = parser.parse_args(argv)

    import msrnet_napari
    from msrnet_napari import _sample_data
    from msrnet_napari.normalize import detect_bit_depth

    weights_label = Path(args.weights).name if args.weights else "bundled default weights"
    rows = []

    photo, photo_meta, _ = _sample_data.dark_photo()[0]
    t0 = time.perf_counter()
    photo_out = msrnet_napari.enhance(photo, weights=args.weights, rgb=True)
    t_photo = time.perf_counter() - t0
    rows.append((
        (_to_rgb8(photo, 255), f"input: {photo_meta['name']}, uint8, mean {photo.mean():.1f}/255"),
        (_to_rgb8(photo_out, 255), f"MSR-net: mean {photo_out.mean():.1f}/255"),
    ))

    fluo, fluo_meta, _ = _sample_data.dim_fluorescence()[0]
    lo, hi = fluo_meta["contrast_limits"]
    depth = args.fluo_bit_depth or None
    t0 = time.perf_counter()
    fluo_out = msrnet_napari.enhance(fluo, weights=args.weights, rgb=False, bit_depth=depth)
    t_fluo = time.perf_counter() - t0
    out_white = hi if depth else 2 ** detect_bit_depth(float(fluo.max())) - 1
    call = f"bit_depth={depth}" if depth else "bit depth auto-detected"
    rows.append((
        (_to_rgb8(fluo - lo, hi - lo),
         f"input: {fluo_meta['name']}, shown 0..{hi:g}, mean {fluo.mean():.0f}"),
        (_to_rgb8(fluo_out, out_white),
         f"MSR-net ({call}): shown 0..{out_white:g}, mean {fluo_out.mean():.0f}"),
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
