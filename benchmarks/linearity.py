"""Linearity of the microscopy path: flat fields and high-dynamic-range scenes.

Serves **scientific imagery**. Two tables, same run:

1. The network's *flat-field response*: the bundled microscopy weights on noise-free flat
   inputs, output minus input in network units (dark level = 0.25, reference level =
   0.65, the linear model's input ceiling = 4), and what is left after the flat-field
   correction of ``msrnet_napari.linearity`` (measured at levels between its grid points).
2. Synthetic 16-bit high-dynamic-range scenes (``--seeds`` Poisson realisations each):
   offset 100 counts, sky 20 counts, read noise 2, two bright Gaussian blobs (sigma 5 px)
   whose peak sets the linear model's scale, and two faint ones (peaks 300 and 100
   counts). Columns: background bias (median of output - input over the background, in
   units of the background noise), faint-blob contrast (mean over the blob's 9 x 9 core
   minus the output's background median, over the noise-free value; 1 = kept), and the
   bright blob's core mean over its true value. Rows: ours with and without the
   correction (``MSRNET_FLAT_CORRECTION=0``), the identity, and a Gaussian blur whose sigma
   is chosen per row on the scene itself (oracle, by the error against the noise-free
   scene) - the blur keeps the background exactly by construction.

    python benchmarks/linearity.py [--seeds 3] [--weights CKPT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BRIGHT = (300.0, 3000.0, 10000.0, 30000.0, 60000.0)
GAUSS_SIGMAS = (0.5, 0.8, 1.2, 1.8, 2.5)


def scene(bright: float, seed: int):
    yy, xx = np.mgrid[:256, :256]
    sig = np.zeros((256, 256))
    for cy, cx, a in ((60, 180, bright), (180, 180, bright), (180, 60, 300.0), (60, 60, 100.0)):
        sig += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0 ** 2))
    rng = np.random.default_rng(seed)
    counts = rng.poisson(sig + 20) + 100 + rng.normal(0, 2, sig.shape)
    return np.clip(counts, 0, 65535).astype(np.uint16), sig + 120.0


def measures(out, x, clean):
    bg = clean < 120.5
    noise = float(np.std(x[bg].astype(np.float64)))
    bg_out = float(np.median(out[bg]))
    bias = (bg_out - float(np.median(x[bg]))) / noise
    faint = []
    for cy, cx in ((180, 60), (60, 60)):
        core = (slice(cy - 4, cy + 5), slice(cx - 4, cx + 5))
        faint.append((float(out[core].mean()) - bg_out) / (float(clean[core].mean()) - 120.0))
    core = (slice(176, 185), slice(176, 185))
    bright = (float(out[core].mean()) - 120.0) / (float(clean[core].mean()) - 120.0)
    return bias, faint[0], faint[1], bright


WEIGHTS = None  # --weights: a linear checkpoint instead of the bundled microscopy model


def ours(x, correct: bool):
    import msrnet_napari
    from msrnet_napari.linearity import switched

    which = {"model": "microscopy"} if WEIGHTS is None else {"weights": WEIGHTS}
    with switched(correct):
        return msrnet_napari.enhance(x, dtype=np.float32, **which).astype(np.float64)


def gaussian_oracle(x, clean):
    from scipy.ndimage import gaussian_filter

    outs = [gaussian_filter(x.astype(np.float64), s) for s in GAUSS_SIGMAS]
    return min(outs, key=lambda o: float(np.mean((o - clean) ** 2)))


def flat_table() -> list[str]:
    from msrnet_napari.engine import Engine
    from msrnet_napari.linearity import flat_outputs, measure_flat_response
    from msrnet_napari.models import model_info
    from msrnet_napari.weights import resolve_weights

    engine = Engine(resolve_weights(WEIGHTS or model_info("microscopy").path), device="cpu")
    condition, told = None, ""
    if engine.config.noise_input:  # its flat response depends on the noise level it is told
        import msrnet_napari

        decision = msrnet_napari.scaling_for(scene(3000.0, 0)[0].astype(np.uint16),
                                             weights=WEIGHTS)
        condition = decision.linear.channels[0].noise_condition()
        told = (f" (noise level told: {condition[0]:.3g} / {condition[1]:.3g}, that of the "
                "bright-3000 scene)")
    flat = measure_flat_response(engine, condition=condition)
    probe = np.array([0.25, 0.2537, 0.3, 0.4013, 0.65, 0.8261, 1.0, 1.5137, 2.0, 3.0113, 3.5],
                     np.float32)
    raw = flat_outputs(engine, probe, condition=condition)  # (n, 3)
    fixed = flat.invert(raw[None].astype(np.float32))[0].mean(-1)
    raw = raw.mean(-1)
    lines = ["| flat input u | x / reference level | network - u | corrected - u |", "|---|---|---|---|"]
    for u, r, f in zip(probe, raw, fixed):
        lines.append(f"| {u:.4f} | {(u - 0.25) / 0.4:.3f} | {r - u:+.2e} | {f - u:+.2e} |")
    lines.append(f"\nmax |T(u) - u| over the calibration grid: {flat.max_deviation():.2e} "
                 f"(network units){told}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--weights", help="a linear checkpoint (default: the bundled microscopy model)")
    args = ap.parse_args(argv)
    global WEIGHTS
    WEIGHTS = args.weights
    sys.path.insert(0, str(ROOT / "src"))
    print("\n".join(flat_table()))
    rows = {"ours (microscopy)": [], "ours, no flat correction": [], "identity": [],
            "Gaussian (oracle sigma)": []}
    for bright in BRIGHT:
        acc = {k: [] for k in rows}
        for seed in range(args.seeds):
            x, clean = scene(bright, seed)
            acc["ours (microscopy)"].append(measures(ours(x, True), x, clean))
            acc["ours, no flat correction"].append(measures(ours(x, False), x, clean))
            acc["identity"].append(measures(x.astype(np.float64), x, clean))
            acc["Gaussian (oracle sigma)"].append(measures(gaussian_oracle(x, clean), x, clean))
        for k in rows:
            rows[k].append(np.mean(acc[k], axis=0))
    print("\nHDR scenes: background bias (noise sigmas) / faint-300 contrast / faint-100 contrast / "
          f"bright core ratio; mean of {args.seeds} seeds\n")
    print("| method | " + " | ".join(f"bright {b:g}" for b in BRIGHT) + " |")
    print("|---|" + "---|" * len(BRIGHT))
    for k, vals in rows.items():
        cells = [f"{v[0]:+.2f} / {v[1]:.3f} / {v[2]:.3f} / {v[3]:.4f}" for v in vals]
        print(f"| {k} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
