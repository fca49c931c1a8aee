"""Calibrate the SNR rule of cycle-spun 2x2 binning on TRAINING data only.

Serves **scientific imagery**. For each training image (W2S avg400 and DSB2018 clean
targets of ``training/microscopy_data``, never the held-out fields) and each photon level,
a synthetic short exposure with random camera parameters (the trainer's sensor model) is
restored twice: at full resolution and with ``binning=2``. The table lists, per bin of
the decision's signal-to-noise ratio (``ChannelMapping.snr``: the scale over the noise
at the bright structures), how often and by how much binning wins (PSNR after an affine fit, as in
``eval_microscopy.py``), and the real W2S *training* pairs likewise. The crossover is the
threshold used by ``linear_intensity.BINNING_SNR``.

    python benchmarks/calibrate_binning.py [--images 16] [--size 192]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (2, 3, 5, 8, 13, 20, 30, 50, 100, 300, 1000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from eval_microscopy import affine_fit_psnr

    import msrnet_napari
    from msrnet_napari.training import microscopy_data as md

    data = md.load(args.data)
    rng = np.random.default_rng(2026)
    clean = [c for c in data.train_clean if min(c.shape) >= args.size]
    picks = rng.choice(len(clean), size=min(args.images, len(clean)), replace=False)
    params = md.SensorParams()
    rows = []  # (snr, psnr single, psnr binned, source)

    def run(x, ref, source):
        x32 = x.astype(np.float32)
        one = msrnet_napari.enhance(x32, model="microscopy", rgb=False, binning=1,
                                    threads=args.threads, return_decision=True)
        two = msrnet_napari.enhance(x32, model="microscopy", rgb=False, binning=2,
                                    threads=args.threads)
        ch = one[1].linear.channels[0]
        rows.append((ch.snr, affine_fit_psnr(one[0].astype(np.float64), ref)[1],
                     affine_fit_psnr(two.astype(np.float64), ref)[1], source))

    for i in picks:
        img = clean[int(i)]
        h, w = img.shape
        s = args.size
        y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        c = img[y0:y0 + s, x0:x0 + s].astype(np.float64)
        for level in LEVELS:
            kw = dict(peak=float(level), bg=level * rng.uniform(*params.background),
                      adu=md._logu(rng, *params.adu_per_electron),
                      read=rng.uniform(*params.read_electrons),
                      offset=rng.uniform(*params.offset), bits=16)
            noisy, expected = md.expose(c, rng, **kw)
            run(noisy, expected, "synthetic")
    for pair in data.train_real[:: max(1, len(data.train_real) // args.images)]:
        run(pair.noisy.astype(np.float64), pair.target.astype(np.float64), "w2s-train")

    r = np.array([(a, b, c) for a, b, c, _ in rows])
    edges = [0, 3.5, 4, 4.5, 5, 5.5, 6, 7, 8, 10, 12, 15, 20, 30, 1e9]
    print(f"{len(rows)} restorations ({sum(1 for q in rows if q[3] == 'w2s-train')} real W2S "
          "training pairs); gain = PSNR(binning=2) - PSNR(binning=1)\n")
    print("| SNR (scale / noise at the structures) | n | binning wins | mean gain dB |")
    print("|---|---|---|---|")
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (r[:, 0] >= lo) & (r[:, 0] < hi)
        if m.any():
            g = r[m, 2] - r[m, 1]
            print(f"| {lo:g}-{hi:g} | {int(m.sum())} | {np.mean(g > 0) * 100:.0f} % | {g.mean():+.2f} |")
    real = np.array([(a, c - b) for a, b, c, s in rows if s == "w2s-train"])
    if len(real):
        print(f"\nreal W2S training pairs: SNR {real[:, 0].min():.1f}-{real[:, 0].max():.1f}, "
              f"mean gain {real[:, 1].mean():+.2f} dB, binning wins {np.mean(real[:, 1] > 0) * 100:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
