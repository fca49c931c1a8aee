"""The microscopy training data (sensor model, held-out split) and its trainer, on a tiny
fake data folder laid out like ``../shared/data/microscopy``."""

from __future__ import annotations

import numpy as np
import pytest

from msrnet_napari.linear_intensity import PEDESTAL, SPAN
from msrnet_napari.training import microscopy_data as md

PIL = pytest.importorskip("PIL.Image")


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture
def data_root(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    for field in (1, 2, 3, 9):  # 3 and 9 are held-out fields
        for ch in range(2):
            clean = 20 + 200 * np.exp(-((yy - 30 - 10 * ch) ** 2 + (xx - 50) ** 2) / 200.0)
            name = f"{field:03d}_{ch}.png"
            _png(tmp_path / "microscopy/w2s/avg400" / name, clean)
            _png(tmp_path / "microscopy/w2s/avg1" / name, clean + rng.normal(0, 15, clean.shape))
    for i in range(12):
        _png(tmp_path / f"microscopy/dsb2018/img{i:02d}.png",
             80 * (np.hypot(yy - 48, xx - 20 - 4 * i) < 12))
    return tmp_path


def _two_steps(data_root, run) -> list[str]:
    """msrnet-train-microscopy arguments for a two-step run on the fake data folder."""
    return ["--data", str(data_root), "--out", str(run), "--steps", "2", "--batch", "2",
            "--crop", "32", "--val-size", "48", "--threads", "1", "--val-every-s", "1e9"]


def test_whole_fields_and_images_are_held_out(data_root):
    data = md.load(data_root)
    train, val = set(data.names["train"]), set(data.names["val"])
    assert not train & val
    val_fields = {md.w2s_field(n.split("/")[1]) for n in val if n.startswith("w2s/")}
    train_fields = {md.w2s_field(n.split("/")[1]) for n in train if n.startswith("w2s/")}
    assert val_fields == {3, 9} and train_fields == {1, 2}
    assert len(data.val_real) == 4 and len(data.train_real) == 4
    dsb_val = [n for n in val if n.startswith("dsb2018/")]
    assert dsb_val == [n for n in sorted(val) if n.startswith("dsb2018/")]  # by name hash
    assert [n for n in md.load(data_root).names["val"]] == data.names["val"]  # fixed


def test_sensor_model_is_poisson_gaussian_with_offset_and_quantisation():
    rng = np.random.default_rng(1)
    clean = np.full((400, 400), 0.5)
    noisy, expected = md.expose(clean, rng, peak=1000, bg=20, adu=2.0, read=3.0, offset=100,
                                bits=12)
    assert np.all(expected == 100 + 2.0 * (500 + 20))
    assert abs(noisy.mean() - expected.mean()) < 1.0
    assert abs(noisy.var() / (4.0 * (520 + 9)) - 1) < 0.05  # adu^2 (electrons + read^2)
    assert np.all(noisy == np.rint(noisy)) and noisy.max() <= 4095
    dim, _ = md.expose(clean, rng, peak=2, bg=0, adu=1.0, read=0.5, offset=10, bits=16)
    assert abs(dim.mean() - 11) < 0.05  # a photon per pixel still averages right


def test_synthetic_pairs_are_in_network_units():
    rng = np.random.default_rng(2)
    clean = np.zeros((128, 128))
    clean[40:80, 40:80] = 1.0
    # the scale is the noisy image's 99.9th percentile: ~the square's level at many photons,
    # well above it (noise) at a few
    for peak, lo, hi in ((3.0, 0.15, 0.9), (1000.0, 0.8, 1.05)):
        x, y = md.synthetic_pair(clean, 96, rng, peak=peak, center=True)
        assert x.shape == y.shape == (96, 96) and x.dtype == y.dtype == np.float32
        # the dark background sits near the pedestal (a random sky / autofluorescence
        # level of up to 5 % of the peak lifts it a little)
        bg = float(np.median(y[:10, :10]))
        assert abs(bg - PEDESTAL) < 0.05
        assert lo * SPAN < float(np.median(y[30:60, 30:60])) - bg < hi * SPAN
    noisy_lo = md.synthetic_pair(clean, 96, np.random.default_rng(3), peak=3.0, center=True)[0]
    noisy_hi = md.synthetic_pair(clean, 96, np.random.default_rng(3), peak=1000.0, center=True)[0]
    assert noisy_lo[30:60, 30:60].std() > 3 * noisy_hi[30:60, 30:60].std()  # fewer photons


def test_trainer_runs_validates_by_the_chosen_groups_and_resumes(data_root, tmp_path):
    pytest.importorskip("torch")
    from msrnet_napari.checkpoint import load_checkpoint
    from msrnet_napari.training import train_microscopy as tm

    out = tmp_path / "run"
    args = ["--data", str(data_root), "--out", str(out), "--steps", "3", "--batch", "2",
            "--crop", "32", "--val-size", "48", "--threads", "1", "--val-every-s", "1e9",
            "--peak-photons", "100", "3000", "--val-groups", "p1000", "w2s"]
    assert tm.main(args) == 0
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best.config.intensity == "linear"
    levels = last.metadata["val_levels"]
    assert set(levels) == {"p3", "p10", "p30", "p100", "p1000", "w2s"}
    assert last.metadata["val_psnr"] == pytest.approx((levels["p1000"] + levels["w2s"]) / 2)
    assert last.metadata["step"] == 3
    assert tm.main(args[:5] + ["6"] + args[6:] + ["--resume"]) == 0
    assert load_checkpoint(out / "last.pt").metadata["step"] == 6
    with pytest.raises(SystemExit, match="none of"):
        tm.main([a if a != "w2s" else "p7" for a in args[:-2]] + ["p7"])


def test_logmse_loss_is_the_mean_log_error_per_crop_and_trains(data_root, tmp_path):
    torch = pytest.importorskip("torch")
    from msrnet_napari.checkpoint import load_checkpoint
    from msrnet_napari.training import train_microscopy as tm

    target = torch.zeros((2, 3, 4, 4))
    out = target.clone()
    out[0] += 0.1  # crop 0: MSE 0.01; crop 1: exact
    expected = (np.log(0.01 + tm.LOG_MSE_FLOOR) + np.log(tm.LOG_MSE_FLOOR)) / 2
    assert float(tm.crop_loss(out, target, "logmse")) == pytest.approx(expected, rel=1e-6)
    assert float(tm.crop_loss(out, target, "mse")) == pytest.approx(0.005, rel=1e-6)
    assert float(tm.crop_loss(out, target, "logmse", floor=1e-3)) == pytest.approx(
        (np.log(0.011) + np.log(1e-3)) / 2, rel=1e-6)
    # the gradient of the log loss weighs each crop by 1 / its MSE: a crop 10x more
    # accurate pulls as hard as one with 10x its error would under plain MSE
    a = torch.full((2, 1, 2, 2), 0.0, requires_grad=True)
    shift = torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)
    tm.crop_loss(a + shift, torch.zeros_like(a), "logmse").backward()
    g = a.grad.view(2, -1)[:, 0]
    floor = tm.LOG_MSE_FLOOR
    ratio = (0.01 / (0.01 ** 2 + floor)) / (0.1 / (0.1 ** 2 + floor))  # ~10 (the floor: 9.9)
    assert float(g[1] / g[0]) == pytest.approx(ratio, rel=1e-4) and ratio > 9.8

    run = tmp_path / "log"
    args = _two_steps(data_root, run) + ["--loss", "logmse", "--log-floor", "1e-5"]
    assert tm.main(args) == 0
    assert load_checkpoint(run / "last.pt").metadata["step"] == 2


def test_validation_bins_the_crops_enhance_would_bin():
    from msrnet_napari.training.train_microscopy import val_binning

    yy, xx = np.mgrid[:128, :128]
    clean = np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / 800.0)  # a smooth cell
    factors = {peak: val_binning(md.synthetic_pair(clean, 128, np.random.default_rng(5),
                                                   peak=peak, center=True)[0])
               for peak in (3.0, 10.0, 1000.0)}
    assert factors == {3.0: 2, 10.0: 2, 1000.0: 1}  # the linear model's SNR rule


def test_grown_checkpoints_compute_the_same_and_fine_tune(data_root, tmp_path):
    """training/widen.py: a wider and a deeper copy of a trained linear model give the same
    output (engine and torch), the trainer fine-tunes the grown copy (--init-full takes
    another width / depth), and a copy that is not the linear model's config is refused."""
    torch = pytest.importorskip("torch")
    from msrnet_napari import _core
    from msrnet_napari.checkpoint import load_checkpoint
    from msrnet_napari.config import MSRNetConfig
    from msrnet_napari.training import train_microscopy as tm
    from msrnet_napari.training import widen as wd
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    cfg = MSRNetConfig(intensity="linear", depth=3, width=8)
    model = init_weights(MSRNet(cfg), seed=1).eval()
    with torch.no_grad():
        model.f2.fuse.weight.mul_(10)  # make f2 matter in the output
    x = torch.rand(1, 3, 24, 20) * 2
    with torch.no_grad():
        ref = model(x)
        for grown in (wd.widen(model, 16, seed=2), wd.deepen(model, 5),
                      wd.deepen(wd.widen(model, 12), 4)):
            assert float((grown(x) - ref).abs().max()) < 1e-5
            assert sum(p.numel() for p in grown.parameters()) > \
                sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="smaller"):
        wd.widen(model, 4)
    with pytest.raises(ValueError, match="smaller"):
        wd.deepen(model, 2)

    src = save_checkpoint(model, tmp_path / "small.pt")
    wide = tmp_path / "wide.pt"
    assert wd.main([str(src), str(wide), "--width", "16", "--depth", "4"]) == 0
    ck = load_checkpoint(wide)
    assert (ck.config.width, ck.config.depth) == (16, 4)
    img = x[0].permute(1, 2, 0).numpy().copy()
    out = _core.Engine(ck.config.engine_dict(), ck.weights).run(img)
    np.testing.assert_allclose(out, ref[0].permute(1, 2, 0).numpy(), atol=1e-5)

    run = tmp_path / "tune"
    args = _two_steps(data_root, run)
    assert tm.main(args + ["--init-full", str(wide)]) == 0
    tuned = load_checkpoint(run / "last.pt")
    assert (tuned.config.width, tuned.config.depth, tuned.metadata["step"]) == (16, 4, 2)
    photo = save_checkpoint(init_weights(MSRNet(MSRNetConfig(depth=3, width=8))),
                            tmp_path / "photo.pt")
    with pytest.raises(SystemExit, match="width, depth and noise_input may differ"):
        tm.main(args + ["--init-full", str(photo)])


def test_noisemse_weighs_crops_by_their_inverse_noise_and_trains(data_root, tmp_path):
    torch = pytest.importorskip("torch")
    from msrnet_napari.checkpoint import load_checkpoint
    from msrnet_napari.training import train_microscopy as tm

    target = torch.zeros((2, 1, 4, 4))
    noisy = target.clone()
    noisy[0] += 0.1  # crop 0: noise RMS 0.1; crop 1: 0.01
    noisy[1] += 0.01
    out = target.clone()
    out += 0.02  # the same error on both crops
    w = 1 / np.sqrt(np.array([0.01, 1e-4]) + tm.LOG_MSE_FLOOR)
    w /= w.mean()
    expected = float(np.mean(w * 4e-4))
    assert float(tm.crop_loss(out, target, "noisemse", noisy=noisy)) == pytest.approx(expected, rel=1e-5)
    assert w[1] / w[0] == pytest.approx(10, rel=0.01)  # 10x less noise, 10x the weight
    with pytest.raises(ValueError, match="noisy input"):
        tm.crop_loss(out, target, "noisemse")
    run = tmp_path / "noise"
    args = _two_steps(data_root, run) + ["--loss", "noisemse", "--range-share", "0.5"]
    assert tm.main(args) == 0
    assert load_checkpoint(run / "last.pt").metadata["step"] == 2


def test_other_range_exposures_set_the_scale_elsewhere():
    """--range-share: a bright object elsewhere in the image makes the crop faint in network
    units (high dynamic range); a dimmer rest of the image lifts it above the reference."""
    yy, xx = np.mgrid[:64, :64]
    clean = 0.05 + np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / 100.0)
    peaks = {"plain": [], "bright": [], "dim": []}
    for seed in range(30):
        base = md.synthetic_pair(clean, 64, np.random.default_rng(seed), peak=1000.0)[1].max()
        peaks["plain"].append(base)
        for kind, ctx in (("bright", (20.0, 20.0)), ("dim", (0.2, 0.2))):
            rng = np.random.default_rng(seed)
            params = md.SensorParams(p_range=1.0, p_spots=0.0, p_hot=0.0,
                                     bright_share=1.0 if kind == "bright" else 0.0,
                                     bright_context=ctx, dim_context=ctx)
            peaks[kind].append(md.synthetic_pair(clean, 64, rng, params, peak=1000.0)[1].max())
    plain, bright, dim = (np.median(peaks[k]) - PEDESTAL for k in ("plain", "bright", "dim"))
    assert plain == pytest.approx(SPAN, rel=0.3)  # the crop's peak near the reference level
    assert bright < plain / 10  # faint beside an object 20x brighter
    assert dim > 3 * plain  # 5x above the reference level


def test_noise_input_checkpoints_train_on_the_noise_level(data_root, tmp_path):
    pytest.importorskip("torch")
    from msrnet_napari.checkpoint import load_checkpoint
    from msrnet_napari.config import MSRNetConfig
    from msrnet_napari.training import train_microscopy as tm
    from msrnet_napari.training import widen as wd
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    plain = save_checkpoint(init_weights(MSRNet(MSRNetConfig(depth=3, width=8,
                                                             intensity="linear"))),
                            tmp_path / "plain.pt")
    told = tmp_path / "told.pt"
    assert wd.main([str(plain), str(told), "--noise-input"]) == 0
    run = tmp_path / "run"
    assert tm.main(_two_steps(data_root, run) + ["--init-full", str(told)]) == 0
    tuned = load_checkpoint(run / "last.pt")
    assert tuned.config.noise_input and tuned.metadata["step"] == 2
    # the fine-tune moved the weights that read the noise level (they started at zero)
    fuse = tuned.weights["f1.fuse.weight"][:, :, 0, 0]
    assert np.abs(fuse[:, 1::3]).max() > 0
    data = md.load(data_root)
    sampler = md.BatchSampler(data, 32, seed=1, condition=True)
    xs, ys, conds = sampler.sample(6)
    assert conds.shape == (6, 2) and np.all(conds >= 0) and np.all(conds > 0)
    val = md.validation_set(data, 48, condition=True)
    plain_val = md.validation_set(data, 48)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(val, plain_val))
    assert all(len(v) == 4 and len(v[3]) == 2 for v in val)
