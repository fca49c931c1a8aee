"""Artefact metrics of benchmarks/eval_quality.py (msrnet_napari.training.metrics) on
synthetic cases with a known answer, and the script's paired-data tables."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("skimage")

from msrnet_napari.training import metrics as M  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def scene(h=128, w=128) -> np.ndarray:
    """Top half: a smooth sky (gentle gradient); bottom half: a textured, coloured ground
    with a strong vertical edge."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.empty((h, w, 3))
    img[..., 0] = 0.45 + 0.1 * xx
    img[..., 1] = 0.55 + 0.1 * xx
    img[..., 2] = 0.75 + 0.05 * yy
    rng = np.random.default_rng(0)
    ground = rng.uniform(0.1, 0.5, (h // 2, w, 3))
    ground[:, w // 2:] = [0.8, 0.2, 0.15]  # a saturated red wall ...
    ground[:, : w // 2] = rng.uniform(0.0, 0.35, (h // 2, w // 2, 3))  # dark texture: an edge
    img[h // 2:] = ground
    return img


def test_flat_mask_finds_the_sky_not_the_texture():
    img = scene()
    mask = M.flat_mask(img)
    assert mask[:32].all()  # the sky patches (those not touching the ground)
    assert mask[64:, :64].mean() == 0  # none of the textured ground
    assert M.flat_mask(np.random.default_rng(1).random((64, 64, 3))).sum() == 0


def test_identity_output_has_no_artefacts():
    img = scene()
    res = M.artefacts(img, img)
    for key in ("chroma_noise", "blotch", "halo", "hue_shift", "hf_noise"):
        assert res[key] == pytest.approx(0.0, abs=1e-6), key


def test_an_added_halo_is_detected():
    from scipy.ndimage import gaussian_filter

    h = w = 96
    ref = np.full((h, w, 3), 0.2)
    ref[:, w // 2:] = 0.7  # one strong edge
    blur = gaussian_filter(ref, (3, 3, 0))
    haloed = np.clip(ref + 0.8 * (ref - blur), 0, 1)  # unsharp mask: over/undershoot beside it
    assert M.edge_band(ref).any()
    assert M.halo(ref, ref) == pytest.approx(0.0, abs=1e-9)
    assert M.halo(ref, haloed) > 5.0  # codes
    # a uniform brightness error is not a halo (GT-mean scaling removes it)
    assert M.halo(ref, ref * 0.8) < 0.5


def test_low_frequency_chroma_noise_and_blotches():
    from scipy.ndimage import gaussian_filter

    img = scene()
    rng = np.random.default_rng(2)
    blobs = gaussian_filter(rng.normal(0, 1, img.shape[:2]), 6)
    blobs *= 0.02 / blobs.std()
    chroma = img.copy()
    chroma[..., 0] += blobs  # red-green blotches at constant-ish luma
    chroma[..., 1] -= blobs * 0.299 / 0.587
    luma = img + blobs[..., None]  # the same pattern in brightness only
    fine = img + rng.normal(0, 0.02, img.shape)  # white noise: not low frequency
    assert M.chroma_noise(img, chroma) > 1.0 and M.blotchiness(img, chroma) < 0.3
    assert M.blotchiness(img, luma) > 2.0 and M.chroma_noise(img, luma) < 0.3
    assert M.chroma_noise(img, fine) < 0.5 * M.chroma_noise(img, chroma)
    assert M.hf_noise(img, fine) > 3.0 > M.hf_noise(img, luma)


def test_hue_shift_of_saturated_pixels():
    img = scene()
    swapped = img[..., [1, 2, 0]]  # R->G->B: a 120 degree hue rotation
    assert M.hue_shift(img, swapped) == pytest.approx(120.0, abs=2.0)
    assert M.hue_shift(img, img * 0.9) == pytest.approx(0.0, abs=0.5)  # darker, same hue


def test_noise_amplification_of_a_plain_gain():
    img = scene()
    rng = np.random.default_rng(3)
    dark = np.clip(img * 0.1 + rng.normal(0, 0.004, img.shape), 0, 1)
    out = np.clip(dark * 10, 0, 1)
    res = M.artefacts(img, out, dark=dark, gain=10.0)
    assert res["noise_amplification"] == pytest.approx(10.0, rel=0.1) and res["gain"] == 10.0


def test_eval_quality_reports_pairs_gt_mean_and_artefacts(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    photos, pairs = tmp_path / "photos", tmp_path / "pairs"
    photos.mkdir()
    for side in ("low", "high"):
        (pairs / side).mkdir(parents=True)
    for i in range(4):
        img = (np.clip(scene(64, 64) + rng.normal(0, 0.01, (64, 64, 3)), 0, 1) * 255)
        Image.fromarray(img.astype(np.uint8)).save(photos / f"p{i}.png")
        Image.fromarray(img.astype(np.uint8)).save(pairs / "high" / f"{i}.png")
        Image.fromarray((img * 0.08).astype(np.uint8)).save(pairs / "low" / f"{i}.png")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import eval_quality
    finally:
        sys.path.pop(0)
    out = tmp_path / "r.json"
    assert eval_quality.main(["--images", str(photos), "--val-images", "1", "--levels", "3",
                              "--pairs", str(pairs), "--pair-val", "2", "--methods", "identity",
                              "--exposure-variant", "robust:exposure_statistic=robust",
                              "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["pairs"]) == {"MSR-net", "MSR-net (robust)", "exposure only",
                                 "exposure only (robust)", "identity"}
    assert all(len(v) == 3 for v in res["pairs"].values())  # PSNR, SSIM, GT-mean PSNR
    assert len(res["mean"]["identity"]["3"]) == 3
    assert res["artefacts"]["exposure only"]["near-black"]["max_gain"] > 1
