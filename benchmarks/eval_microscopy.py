"""Held-out evaluation for scientific (linear) imagery: ours vs classical denoisers.

Serves **scientific imagery**. Two sets, never trained on (the split of
``msrnet_napari.training.microscopy_data``: whole W2S fields, whole DSB images):

* ``w2s``: real widefield fluorescence, one raw frame (avg1) vs the 400-frame
  average (avg400) of the same field, 8-bit each (scaled on its own);
* ``pN``: synthetic short exposures of held-out clean images (W2S avg400, DSB2018)
  with N photons at the brightest pixel: Poisson shot noise, 2 e- read noise,
  offset 100 DN, 1 DN/e-, 16-bit counts (fixed seeds).

Every output is compared with the reference in the input's units (``ref``: the
expected counts, or avg400 affinely fitted to avg1). Columns:

* ``PSNR``/``SSIM`` after a least-squares affine fit of the output to the reference
  (so a method is not punished for a global gain/offset), peak = reference range;
* ``R2``: of that fit (how linear the output is in the true intensities);
* ``rho``: Spearman correlation of per-object mean intensities (objects: Otsu
  threshold of the reference, components of >= 20 px), output vs reference;
* ``bg``: |median background of the output - of the reference| in % of the
  reference's range (raw output, no fit: does the background stay where it was?);
* ``halo``: how far the 2-6 px ring around objects falls below the background,
  in % of range (raw output), minus the reference's own (0 = no invented halo);
  ``noise`` in the table header is the background noise of the input, same units.

Baselines are tuned per set on the set itself (an oracle choice of their
parameter, which favours them), each metric on its own (the SSIM cell is the best SSIM of
the grid, which may be another parameter than the best PSNR): Gaussian sigma, NL-means
and BM3D strength (x the wavelet noise estimate), and BM3D after the generalised
Anscombe transform with each image's Poisson-Gaussian noise model fitted against the
reference (``BM3D + VST``, the standard use of BM3D on photon counts; strength x the
stabilised unit noise); percentile stretch and CLAHE are display mappings.

    python benchmarks/eval_microscopy.py            # all rows (BM3D: pip install bm3d)
    python benchmarks/eval_microscopy.py --fast     # 4 images per set, no BM3D tuning
    python benchmarks/eval_microscopy.py --max-images 8 --jobs 2 --cache runs/baselines.json
                                                    # the README table; baselines cached
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (3.0, 10.0, 30.0, 100.0, 1000.0)
OFFSET, ADU, READ = 100.0, 1.0, 2.0


# --------------------------------------------------------------------------- data

def load_sets(data: Path, size: int, max_images: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """{set: [(input counts float64, reference in the input's units)]}."""
    sys.path.insert(0, str(ROOT / "src"))
    from msrnet_napari.training import microscopy_data as md

    d = md.load(data)
    sets: dict[str, list] = {"w2s": []}
    for pair in d.val_real[:max_images]:
        sets["w2s"].append((pair.noisy.astype(np.float64), pair.target.astype(np.float64)))
    clean = d.val_clean
    picks = sorted({int(i) for i in np.linspace(0, len(clean) - 1, min(max_images, len(clean)))})
    for level in LEVELS:
        rng = np.random.default_rng(int(level) * 31 + 1)
        items = []
        for i in picks:
            c = clean[i]
            h, w = c.shape
            s = min(size, h, w)
            c = c[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].astype(np.float64)
            expected = OFFSET + ADU * level * c
            counts = rng.poisson(level * c) + rng.normal(0, READ, c.shape)
            noisy = np.clip(np.rint(OFFSET + ADU * counts), 0, 65535)
            items.append((noisy, expected))
        sets[f"p{level:g}"] = items
    return sets


# --------------------------------------------------------------------------- methods

def _norm(x):
    lo, hi = np.percentile(x, [0.1, 99.9])
    hi = max(hi, lo + 1e-9)
    return (x - lo) / (hi - lo), lo, hi


def _denorm(u, lo, hi):
    return u * (hi - lo) + lo


def _sigma(u):
    from skimage.restoration import estimate_sigma

    return max(float(estimate_sigma(u)), 1e-4)


def m_identity(x, _p):
    return x


def m_gaussian(x, sigma):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma)


def m_nlmeans(x, k):
    from skimage.restoration import denoise_nl_means

    u, lo, hi = _norm(x)
    s = _sigma(u)
    out = denoise_nl_means(u, h=k * s, sigma=s, fast_mode=True, patch_size=5, patch_distance=6)
    return _denorm(out, lo, hi)


def m_bm3d(x, k):
    import bm3d

    u, lo, hi = _norm(x)
    return _denorm(bm3d.bm3d(u.astype(np.float32), sigma_psd=k * _sigma(u)), lo, hi)


def noise_model(x, ref):
    """(a, c) of var(x) = a * E[x] + c, fitted to the squared residual against the reference.

    An oracle estimate (it uses the reference), as the baselines' parameter choice is: it
    gives the variance-stabilised BM3D the exact Poisson-Gaussian noise model of each image.
    """
    r2 = (x - ref).ravel() ** 2
    m = ref.ravel()
    edges = np.unique(np.quantile(m, np.linspace(0, 1, 33)))
    idx = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, len(edges) - 2)
    cnt = np.bincount(idx, minlength=len(edges) - 1)
    ok = cnt >= 50
    mean = np.bincount(idx, m, minlength=len(edges) - 1)[ok] / cnt[ok]
    var = np.bincount(idx, r2, minlength=len(edges) - 1)[ok] / cnt[ok]
    a, c = np.polyfit(mean, var, 1, w=np.sqrt(cnt[ok]))
    return max(float(a), 1e-6), float(c)


def _anscombe_inverse(d):
    """Closed-form approximation of the exact unbiased inverse of the Anscombe
    transform (Makitalo & Foi 2011)."""
    d = np.asarray(d, dtype=np.float64)
    dc = np.maximum(d, 1.0)
    s = np.sqrt(1.5)
    z = 0.25 * dc**2 + 0.25 * s / dc - 11 / 8 / dc**2 + 5 / 8 * s / dc**3 - 1 / 8
    # below 2 sqrt(3/8) (the transform of a zero count) the mean count is 0
    return np.where(d < 2 * np.sqrt(3 / 8), 0.0, np.maximum(z, 0.0))


def m_bm3d_vst(x, k, noise):
    """BM3D after the generalised Anscombe transform with the image's own (oracle) noise
    model: the standard way to apply a Gaussian denoiser to Poisson-Gaussian counts."""
    import bm3d

    a, c = noise
    z = x / a + c / a**2  # var(z) = E[z]
    y = 2 * np.sqrt(np.maximum(z + 3 / 8, 0))
    lo, hi = float(y.min()), float(y.max())
    span = max(hi - lo, 1e-9)
    yd = bm3d.bm3d(((y - lo) / span).astype(np.float32), sigma_psd=k / span) * span + lo
    return a * (_anscombe_inverse(yd) - c / a**2)


def m_stretch(x, _p):  # the display mapping, returned in the input's units
    u, lo, hi = _norm(x)
    return _denorm(np.clip(u, 0, 1), lo, hi)


def m_clahe(x, _p):
    from skimage.exposure import equalize_adapthist

    u, lo, hi = _norm(x)
    return _denorm(equalize_adapthist(np.clip(u, 0, 1), clip_limit=0.01), lo, hi)


class m_ours:  # noqa: N801 - a method like the m_* functions, but picklable for --jobs
    """The counts go in as uint16, as a camera writes them. The microscopy model returns
    float32 in the same units (``dtype=np.float32``: rounding to whole counts would cost
    precision at a few photons, and the baselines' outputs are not rounded either); the
    photo model returns uint16, its only sensible output for such data."""

    def __init__(self, model, binning=None, weights=None, flat_correction=True):
        self.model, self.binning, self.weights = model, binning, weights
        self.flat_correction = flat_correction  # False: the ablation (MSRNET_FLAT_CORRECTION=0)

    def __call__(self, x, _p):
        import msrnet_napari
        from msrnet_napari.linearity import switched

        counts = x.astype(np.uint16) if x.max() < 65536 else x
        dtype = np.float32 if self.model == "microscopy" else None
        kw = {} if self.binning is None else {"binning": self.binning}
        kw.update({"model": self.model} if self.weights is None else {"weights": self.weights})
        with switched(self.flat_correction):
            return msrnet_napari.enhance(counts, rgb=False, dtype=dtype, **kw).astype(np.float64)


# --------------------------------------------------------------------------- metrics

def objects(ref):
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    t = threshold_otsu(ref)
    lab = label(ref > t)
    counts = np.bincount(lab.ravel())
    keep = [i for i in range(1, len(counts)) if counts[i] >= 20]
    return lab, keep, ref <= t


def affine_fit_psnr(out, ref):
    """(least-squares affine fit of ``out`` to ``ref``, its PSNR with the reference's
    range as the peak): the fit every PSNR/SSIM of this benchmark is taken after."""
    A = np.stack([out.ravel(), np.ones(out.size)], 1)
    coef, *_ = np.linalg.lstsq(A, ref.ravel(), rcond=None)
    fit = (A @ coef).reshape(ref.shape)
    rng_ = float(ref.max() - ref.min()) or 1.0
    mse = float(np.mean((fit - ref) ** 2))
    return fit, 10 * np.log10(rng_**2 / max(mse, 1e-12))


def metrics(out, ref, lab, keep, bg_mask):
    from scipy.ndimage import binary_dilation
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    fit, psnr = affine_fit_psnr(out, ref)
    rng_ = float(ref.max() - ref.min()) or 1.0
    ssim = structural_similarity(fit, ref, data_range=rng_)
    r2 = 1 - np.sum((fit - ref) ** 2) / np.sum((ref - ref.mean()) ** 2)
    if len(keep) >= 3:
        idx = np.asarray(keep)
        m_out = np.bincount(lab.ravel(), out.ravel())[idx] / np.bincount(lab.ravel())[idx]
        m_ref = np.bincount(lab.ravel(), ref.ravel())[idx] / np.bincount(lab.ravel())[idx]
        rho = float(spearmanr(m_out, m_ref).correlation)
    else:
        rho = float("nan")
    bg_out, bg_ref = float(np.median(out[bg_mask])), float(np.median(ref[bg_mask]))
    bg = abs(bg_out - bg_ref) / rng_ * 100
    obj = lab > 0
    ring = binary_dilation(obj, iterations=6) & ~binary_dilation(obj, iterations=2) & bg_mask
    if ring.sum() >= 20:
        halo = max(0.0, (bg_out - float(np.median(out[ring]))) - (bg_ref - float(np.median(ref[ring]))))
        halo = halo / rng_ * 100
    else:
        halo = float("nan")
    return psnr, ssim, r2, rho, bg, halo


def evaluate(method, param, items, prepared):
    rows = []
    for (x, ref), prep in zip(items, prepared):
        if getattr(method, "needs_noise", False):
            out = method(x, param, noise_model(x, ref))
        else:
            out = method(x, param)
        rows.append(metrics(out, ref, *prep))
    return np.nanmean(np.asarray(rows, dtype=float), axis=0)


m_bm3d_vst.needs_noise = True  # type: ignore[attr-defined]


def _evaluate_job(job):
    name, fn, param, set_name, items, prepared = job
    t = time.time()
    return name, set_name, param, evaluate(fn, param, items, prepared), time.time() - t


def _job_key(job) -> str:
    return f"{job[0]}|{job[3]}|{job[2]}"


def _load_cache(args) -> tuple[dict, str]:
    """The cached baseline results, valid only for the same data, size and image count."""
    import json

    key = f"{Path(args.data).resolve()}|size={args.size}|n={args.max_images}"
    if not args.cache or not Path(args.cache).exists():
        return {}, key
    stored = json.loads(Path(args.cache).read_text())
    return (stored["results"] if stored.get("key") == key else {}), key


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--size", type=int, default=256, help="centre crop of the synthetic sets")
    ap.add_argument("--max-images", type=int, default=12)
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--no-bm3d", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes for the grid")
    ap.add_argument("--weights", help="a linear checkpoint for the ours (microscopy) rows "
                                      "(default: the bundled microscopy model)")
    ap.add_argument("--cache", help="JSON file keeping the baselines' results (not ours) between "
                                    "runs with the same --size / --max-images / --data")
    ap.add_argument("--only-baselines", action="store_true", help="fill the cache and stop")
    args = ap.parse_args(argv)
    if args.fast:
        args.max_images = 4
    sets = load_sets(Path(args.data), args.size, args.max_images)
    methods = [
        ("ours (microscopy)", m_ours("microscopy", weights=args.weights), [None]),
        ("ours (microscopy, binning 1)", m_ours("microscopy", binning=1, weights=args.weights),
         [None]),
        ("ours (microscopy, no flat correction)",
         m_ours("microscopy", weights=args.weights, flat_correction=False), [None]),
        ("ours (photo)", m_ours("photo"), [None]),
        ("identity", m_identity, [None]),
        ("Gaussian", m_gaussian, [0.5, 0.8, 1.2, 1.8, 2.5, 3.5, 5.0]),
        ("NL-means", m_nlmeans, [0.6, 0.9, 1.2, 1.6, 2.2, 3.0]),
        ("BM3D", m_bm3d, [1.0, 1.4, 2.0, 2.8, 4.0] if not args.fast else [1.0]),
        ("BM3D + VST", m_bm3d_vst, [1.0, 1.4, 2.0] if not args.fast else [1.0]),
        ("percentile stretch", m_stretch, [None]),
        ("CLAHE", m_clahe, [None]),
    ]
    if args.no_bm3d:
        methods = [m for m in methods if not m[0].startswith("BM3D")]
    noise = {}
    jobs = []
    for set_name, items in sets.items():
        prepared = [objects(ref) for _, ref in items]
        noise[set_name] = float(np.mean([np.std(x[p[2]] - ref[p[2]]) / (ref.max() - ref.min()) * 100
                                         for (x, ref), p in zip(items, prepared)]))
        for name, fn, params in methods:
            jobs += [(name, fn, p, set_name, items, prepared) for p in params]
    grid: dict[tuple[str, str], list] = {}
    cache, key = _load_cache(args)
    if args.only_baselines:
        jobs = [j for j in jobs if not j[0].startswith("ours")]
    cached = [j for j in jobs if _job_key(j) in cache]
    jobs = [j for j in jobs if _job_key(j) not in cache]
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs) as pool:
            done = list(pool.map(_evaluate_job, jobs))
    else:
        done = [_evaluate_job(j) for j in jobs]
    if args.cache:
        import json

        for name, set_name, p, r, _s in done:
            if not name.startswith("ours"):
                cache[_job_key((name, None, p, set_name))] = [float(v) for v in r]
        Path(args.cache).write_text(json.dumps({"key": key, "results": cache}, indent=0))
    done += [(j[0], j[3], j[2], np.asarray(cache[_job_key(j)]), 0.0) for j in cached]
    if args.only_baselines:
        return 0
    for name, set_name, p, r, seconds in done:
        grid.setdefault((name, set_name), []).append((r, p))
        print(f"  {set_name:6s} {name:20s} param {p}: PSNR {r[0]:6.2f} SSIM {r[1]:.3f} "
              f"({seconds:.0f}s)", file=sys.stderr, flush=True)
    # Each baseline's best parameter is chosen per set and per metric: the PSNR cell is
    # its best PSNR over the grid, the SSIM cell its best SSIM (possibly another
    # parameter); the quantitative columns are those of the best-PSNR parameter.
    results: dict[str, dict[str, tuple]] = {}
    for name, _fn, _params in methods:
        for set_name in sets:
            runs = grid[(name, set_name)]
            by_psnr = max(runs, key=lambda rp: rp[0][0])
            by_ssim = max(runs, key=lambda rp: rp[0][1])
            row = list(by_psnr[0])
            row[1] = by_ssim[0][1]
            param = by_psnr[1] if by_psnr[1] == by_ssim[1] else f"{by_psnr[1]}/{by_ssim[1]}"
            results.setdefault(name, {})[set_name] = (*row, param)
    names = list(sets)
    print(f"\nHeld-out scientific imagery: {len(sets['w2s'])} real W2S pairs, "
          f"{len(sets[names[1]])} images x {len(LEVELS)} photon levels; PSNR/SSIM after an affine "
          "fit; the baselines' best parameter per set and per metric (oracle)\n")
    print("| method | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for name, per in results.items():
        cells = [f"{per[s][0]:.2f} / {per[s][1]:.3f}" for s in names]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nQuantitative checks (R2 of the fit / Spearman of object means / background error % / "
          "halo depth %), input noise % of range: "
          + ", ".join(f"{s} {noise[s]:.2f}" for s in names) + "\n")
    print("| method | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for name, per in results.items():
        cells = [f"{per[s][2]:.3f} / {per[s][3]:.3f} / {per[s][4]:.2f} / {per[s][5]:.2f}" for s in names]
        print(f"| {name} | " + " | ".join(cells) + " |")
    tuned = {name: {s: per[s][6] for s in names} for name, per in results.items()
             if any(per[s][6] is not None for s in names)}
    print("\nBaseline parameters chosen (oracle, per set; PSNR/SSIM where they differ): " +
          "; ".join(f"{n}: " + ", ".join(f"{s}={v}" for s, v in d.items()) for n, d in tuned.items()))
    ours = results["ours (microscopy)"]
    peers = [n for n in results if not n.startswith("ours (microscopy")]
    verdict = all(ours[s][0] > results[n][s][0] and ours[s][1] > results[n][s][1]
                  for s in names for n in peers)
    print(f"\nours (microscopy) beats every other row on PSNR and SSIM in every set: "
          f"{'YES' if verdict else 'NO'}")
    for s in names:
        losers = [n for n in peers if not (ours[s][0] > results[n][s][0] and ours[s][1] > results[n][s][1])]
        if losers:
            print(f"  {s}: not ahead of {', '.join(losers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
