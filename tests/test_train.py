import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skimage")
PIL = pytest.importorskip("PIL.Image")

from msrnet_napari.config import MSRNetConfig  # noqa: E402
from msrnet_napari.training import train  # noqa: E402
from msrnet_napari.training.data import CropSampler, load_pack, save_pack  # noqa: E402
from msrnet_napari.training.degrade import synthesize_torch  # noqa: E402
from msrnet_napari.training.model import MSRNet, init_weights  # noqa: E402

SMALL = ["--depth", "2", "--width", "8", "--crop", "16", "--batch", "4", "--val-size", "32",
         "--threads", "1", "--device", "cpu", "--log-every", "1"]


def _load(path):
    try:
        from msrnet_napari.checkpoint import load_checkpoint
    except ImportError:  # pragma: no cover - before the safe loader exists
        return torch.load(path, weights_only=True)["step"]
    return load_checkpoint(path).metadata["step"]


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    names = []
    for i in range(4):
        yy, xx = np.mgrid[0:40, 0:52]
        img = np.stack([(np.sin(xx / (3 + i)) + 1) / 2, (np.cos(yy / 4) + 1) / 2,
                        rng.random((40, 52))], -1)
        PIL.fromarray((img * 255).astype(np.uint8)).save(folder / f"im{i}.png")
        names.append(f"im{i}.png")
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": names[:3], "val": names[3:]}))
    return folder, splits


def test_train_writes_checkpoints_and_resumes(image_folder, tmp_path, capsys):
    folder, splits = image_folder
    out = tmp_path / "run"
    args = ["--images", str(folder), "--splits", str(splits), "--out", str(out)] + SMALL
    assert train.main(args + ["--steps", "3"]) == 0
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert _load(out / "last.pt") == 3
    payload = torch.load(out / "last.pt", weights_only=True)
    assert "optimizer" in payload and payload["config"]["depth"] == 2
    assert payload["train_config"]["batch"] == 4
    assert train.main(args + ["--steps", "5", "--resume", "--keep-val-checkpoints"]) == 0
    assert _load(out / "last.pt") == 5
    assert _load(out / "val_step5.pt") == 5 and not (out / "val_step3.pt").exists()
    assert "resumed from" in capsys.readouterr().out


def test_trainer_setup_step_validate_save_and_resume(image_folder, tmp_path):
    folder, splits = image_folder
    argv = ["--images", str(folder), "--splits", str(splits), "--out", str(tmp_path / "t"),
            "--steps", "2", "--exposure-target", "0.3"] + SMALL
    trainer = train.Trainer(train.build_parser().parse_args(argv))
    trainer.setup()
    assert trainer.step_no == 0 and trainer.image_gain and len(trainer.val_set) == 4
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    loss = trainer.step(1e-3)
    assert trainer.step_no == 1 and np.isfinite(float(loss))
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    val = trainer.validate()
    assert trainer.best_psnr == val["psnr"] and sorted(val["levels"]) == ["1", "2", "3", "4"]
    last = torch.load(tmp_path / "t" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "t" / "best.pt", weights_only=True)
    common = {"format", "version", "config", "state_dict", "step", "val_psnr", "val_ssim",
              "val_levels", "best_val_psnr", "train_seconds", "train_config"}
    assert set(last) == common | {"optimizer"} and set(best) == common
    assert last["step"] == 1 and last["best_val_psnr"] == val["psnr"]
    resumed = train.Trainer(train.build_parser().parse_args(argv + ["--resume"]))
    resumed.setup()
    assert resumed.step_no == 1 and resumed.best_psnr == pytest.approx(val["psnr"])
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v)
    assert resumed.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()
    resumed.fit()
    assert resumed.step_no == 2 and resumed.finish()["psnr"] == resumed.last_val["psnr"]
    assert _load(tmp_path / "t" / "last.pt") == 2


def test_init_keeps_weights_and_takes_new_exposure_settings(image_folder, tmp_path):
    from msrnet_napari.checkpoint import load_checkpoint

    folder, splits = image_folder
    data = ["--images", str(folder), "--splits", str(splits)]
    first, second = tmp_path / "first", tmp_path / "second"
    assert train.main(data + ["--out", str(first), "--steps", "1", "--exposure-target", "0.4"]
                      + SMALL) == 0
    base = load_checkpoint(first / "last.pt")
    assert (base.config.exposure_target, base.config.exposure_space) == (0.4, "display")
    # --steps 0: no update, so the weights must come through unchanged
    assert train.main(data + ["--out", str(second), "--steps", "0", "--init", str(first / "last.pt"),
                              "--exposure-space", "linear", "--exposure-target", "0.2",
                              "--p-sensor", "1.0"] + SMALL) == 0
    moved = load_checkpoint(second / "last.pt")
    assert (moved.config.exposure_target, moved.config.exposure_space) == (0.2, "linear")
    assert moved.config.depth == base.config.depth == 2
    for name, value in base.weights.items():
        np.testing.assert_array_equal(moved.weights[name], value)
    with pytest.raises(SystemExit, match="p-sensor"):
        train.main(data + ["--out", str(second), "--steps", "1", "--p-sensor", "1.5"] + SMALL)


def test_train_from_pack_with_time_limit(image_folder, tmp_path):
    from msrnet_napari.training.data import load_folder

    folder, splits = image_folder
    pack = save_pack(tmp_path / "pack.npz", *load_folder(folder, splits))
    tr, va = load_pack(pack)
    assert len(tr) == 3 and len(va) == 1 and next(iter(tr.values())).dtype == np.uint8
    out = tmp_path / "run2"
    assert train.main(["--pack", str(pack), "--out", str(out), "--steps", "100000",
                       "--time-limit", "0.1"] + SMALL) == 0
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()


def test_crop_sampler_shapes_and_range():
    imgs = [np.random.default_rng(i).integers(0, 256, (30 + i, 20 + 2 * i, 3), dtype=np.uint8)
            for i in range(3)]
    s = CropSampler(imgs, 24, seed=1)
    b = s.sample(6)
    assert tuple(b.shape) == (6, 3, 24, 24) and b.dtype == torch.float32
    assert 0 <= float(b.min()) and float(b.max()) <= 1


def test_crop_sampler_context_pixels_come_from_the_crops_own_image():
    # three flat images of different values: every crop and its context share one value
    imgs = [np.full((30, 40, 3), v, dtype=np.uint8) for v in (10, 120, 250)]
    s = CropSampler(imgs, 16, seed=2)
    crops, ctx = s.sample(12, context=100)
    assert tuple(crops.shape) == (12, 3, 16, 16)
    assert tuple(ctx.shape) == (12, 3, 16, 7)  # ceil(100 / 16) columns
    for crop, pixels in zip(crops, ctx):
        assert torch.equal(pixels.unique(), crop.unique())
    assert len({float(c[0, 0, 0]) for c in crops}) > 1  # several source images were drawn


def test_val_set_gain_comes_from_the_whole_darkened_image():
    from msrnet_napari.exposure import srgb_to_linear
    from msrnet_napari.training.degrade import darken, to_float

    img = np.zeros((64, 64, 3), dtype=np.uint8)
    img[:, :32] = 250  # bright left half, black right half
    val_set = train.make_val_set({"half": img}, 16)  # the 16 x 16 centre crop is half bright
    assert len(val_set) == 4
    level, dark, bright, means = val_set[0]
    assert dark.shape == bright.shape == (16, 16, 3)
    whole = darken(to_float(img), level)
    assert means["display"] == pytest.approx(float(whole.mean()), rel=1e-5)
    assert means["linear"] == pytest.approx(float(srgb_to_linear(whole).mean()), rel=1e-5)


def test_training_gain_is_the_whole_image_gain_not_the_crops():
    """A crop of a dark region is not brightened to the target on its own."""
    model = MSRNet(MSRNetConfig(depth=2, width=8, exposure_target=0.2, exposure_space="linear"))
    dark_region = torch.full((1, 3, 8, 8), 0.05)
    whole_image = torch.cat([dark_region, torch.full((1, 3, 8, 8), 0.6)], dim=3)
    own, image = model.exposure_gain(dark_region), model.exposure_gain(whole_image)
    assert float(own) > 5 * float(image) > 0
    x = model.normalise_exposure(dark_region, image)
    assert float(x.mean()) < float(model.normalise_exposure(dark_region).mean())


def test_overfit_tiny_batch_loss_decreases():
    torch.manual_seed(0)
    model = init_weights(MSRNet(MSRNetConfig(depth=2, width=8)), seed=0)
    opt = train.make_optimizer(model, 3e-3, 1e-6)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    bright = torch.from_numpy(rng.random((4, 3, 16, 16)).astype(np.float32) * 0.6 + 0.3)
    dark = synthesize_torch(bright, gen, mode="gamma")
    losses = [float(train.train_step(model, opt, dark, bright)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert all(np.isfinite(losses))


def test_lr_schedule():
    args = train.build_parser().parse_args(["--out", "x", "--lr", "1e-3", "--schedule", "cosine",
                                            "--steps", "100", "--warmup", "10"])
    assert train.lr_at(0, args, 0, 0) == pytest.approx(1e-4)
    assert train.lr_at(10, args, 0, 0) == pytest.approx(1e-3, rel=0.05)
    assert train.lr_at(100, args, 0, 0) == pytest.approx(1e-3 * args.min_lr_frac)
    assert train.lr_at(50, args, 90, 100) < train.lr_at(50, args, 0, 0)


@pytest.mark.parametrize("space", ["display", "linear"])
def test_identity_start_passes_the_normalised_input_through(space):
    from msrnet_napari.training.model import identity_start

    config = MSRNetConfig(depth=3, width=8, exposure_target=0.2 if space == "linear" else 0.4,
                          exposure_space=space)
    model = init_weights(MSRNet(config), seed=1)
    conv0 = model.f2.convs[0].weight.detach().clone()
    x = torch.rand((2, 3, 24, 20), generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        before = model(x)
        identity_start(model)
        out = model(x)
        normalised = model.normalise_exposure(x)
    assert normalised.mean() > 2 * x.mean()  # the gain did brighten the dark input
    assert (out - normalised).abs().max() < 0.025  # the least-squares fit of y = x
    assert (before - normalised).abs().max() > 0.1  # a random network is not the identity
    assert torch.equal(model.f2.convs[0].weight, conv0)  # f2's features are kept


def test_average_checkpoints(tmp_path, capsys):
    from msrnet_napari.checkpoint import load_checkpoint
    from msrnet_napari.training import average as avg
    from msrnet_napari.training.model import save_checkpoint

    assert avg.main([str(tmp_path / "avg.pt"), "only_one.pt"]) == 2  # usage
    assert "OUT.pt A.pt B.pt" in capsys.readouterr().err
    config = MSRNetConfig(depth=2, width=8, exposure_target=0.2, exposure_space="linear")
    paths = [save_checkpoint(init_weights(MSRNet(config), seed=s), tmp_path / f"s{s}.pt", step=10 * s)
             for s in (1, 2, 3)]
    assert avg.main([str(tmp_path / "avg.pt"), *map(str, paths)]) == 0
    out = load_checkpoint(tmp_path / "avg.pt")
    parts = [load_checkpoint(p) for p in paths]
    assert out.config == config and out.metadata["averaged_steps"] == [10, 20, 30]
    for name, value in out.weights.items():
        np.testing.assert_allclose(value, np.mean([p.weights[name] for p in parts], axis=0), atol=1e-7)
    other = save_checkpoint(init_weights(MSRNet(MSRNetConfig(depth=2, width=8)), seed=1),
                            tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="differs"):
        avg.main([str(tmp_path / "bad.pt"), str(paths[0]), str(other)])


def test_scripts_are_thin_entry_points_of_the_training_modules():
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    for script, module in (("average_checkpoints.py", "msrnet_napari.training.average"),
                           ("make_data_pack.py", "msrnet_napari.training.data_pack")):
        text = (scripts / script).read_text()
        assert f"from {module} import main" in text and "def " not in text


def test_data_pack_shrinks_until_it_fits(image_folder, tmp_path, capsys):
    from msrnet_napari.training import data_pack

    folder, splits = image_folder
    out = tmp_path / "pack.npz"
    big = np.zeros((40, 52, 3), np.uint8)
    assert data_pack.shrink(big, 64) is big
    assert data_pack.shrink(big, 26).shape == (20, 26, 3)
    assert data_pack.main(["--images", str(folder), "--splits", str(splits), "--out", str(out),
                           "--max-side", "48"]) == 0
    tr, va = load_pack(out)
    assert sorted(tr) == ["im0.png", "im1.png", "im2.png"] and list(va) == ["im3.png"]
    assert all(a.shape == (37, 48, 3) and a.dtype == np.uint8 for a in [*tr.values(), *va.values()])
    # a size limit no pack can meet: shrinks by 10 % per round down to below 128 px
    assert data_pack.main(["--images", str(folder), "--splits", str(splits), "--out", str(out),
                           "--max-mb", "0", "--max-side", "140"]) == 0
    assert "max side 126" in capsys.readouterr().out


# --------------------------------------------------------------------------- v2: real pairs

@pytest.fixture
def pair_folder(tmp_path):
    """12 aligned pairs: low = a darker, noisier copy of high; same stems, other formats."""
    rng = np.random.default_rng(5)
    root = tmp_path / "pairs"
    (root / "low").mkdir(parents=True)
    (root / "high").mkdir()
    for i in range(12):
        yy, xx = np.mgrid[0:36, 0:44]
        high = np.stack([(np.sin(xx / (2 + i % 4)) + 1) / 2, (np.cos(yy / 5) + 1) / 2,
                         rng.random((36, 44))], -1) * 0.8 + 0.1
        low = np.clip(high * (0.05 + 0.01 * i) + rng.normal(0, 0.004, high.shape), 0, 1)
        PIL.fromarray((low * 255).round().astype(np.uint8)).save(root / "low" / f"{i}.png")
        PIL.fromarray((high * 255).round().astype(np.uint8)).save(root / "high" / f"{i}.png")
    return root


def test_pairs_load_with_a_fixed_holdout_that_never_overlaps(pair_folder, tmp_path):
    from msrnet_napari.training.data import load_pairs, pair_split

    split_file = tmp_path / "splits" / "pairs.json"
    train_pairs, val_pairs = load_pairs(pair_folder, split_file, n_val=3)
    assert len(train_pairs) == 9 and len(val_pairs) == 3
    assert not set(train_pairs) & set(val_pairs)
    low, high = val_pairs[next(iter(val_pairs))]
    assert low.shape == high.shape == (36, 44, 3) and low.dtype == np.uint8
    assert low.mean() < high.mean()
    saved = json.loads(split_file.read_text())
    assert sorted(saved["val"]) == sorted(val_pairs) and "sha256" in saved["rule"]
    # deterministic: the rule depends on the stems only, not on the order or the folder
    stems = [str(i) for i in range(12)]
    assert pair_split(stems, 3) == pair_split(stems[::-1], 3)
    assert sorted(pair_split(stems, 3)["val"]) == sorted(val_pairs)
    # the split file wins over the rule (reproducible even if the rule's n changes)
    again, again_val = load_pairs(pair_folder, split_file, n_val=5)
    assert sorted(again_val) == sorted(val_pairs) and sorted(again) == sorted(train_pairs)
    split_file.write_text(json.dumps({"train": ["0", "1"], "val": ["1"]}))
    with pytest.raises(ValueError, match="both train and val"):
        load_pairs(pair_folder, split_file)


def test_unpaired_stems_are_refused(pair_folder):
    from msrnet_napari.training.data import load_pairs

    (pair_folder / "high" / "0.png").rename(pair_folder / "high" / "zz.png")
    with pytest.raises(ValueError, match="lack a partner"):
        load_pairs(pair_folder)


def test_pair_sampler_cuts_aligned_crops_with_the_whole_image_gain():
    from msrnet_napari.training.data import PairSampler

    rng = np.random.default_rng(1)
    highs = [rng.integers(40, 250, (30, 34, 3), dtype=np.uint8) for _ in range(3)]
    pairs = [((h // 4).astype(np.uint8), h) for h in highs]
    s = PairSampler(pairs, [2.0, 3.0, 4.0], 12, seed=3)
    for _ in range(3):
        low, high, gain = s.sample(8)
        assert low.shape == high.shape == (8, 3, 12, 12) and gain.shape == (8, 1, 1, 1)
        # the same position and transform: low is high // 4 pixel by pixel
        np.testing.assert_allclose((high * 255).round().numpy() // 4, (low * 255).round().numpy())
        assert set(gain.flatten().tolist()) <= {2.0, 3.0, 4.0}


def test_photo_folder_trees_and_fixed_val_count(tmp_path, image_folder):
    from msrnet_napari.training.data import load_dataset

    folder, _ = image_folder
    other = tmp_path / "other" / "sub"
    other.mkdir(parents=True)
    PIL.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(other / "x.jpg")
    train_imgs, val_imgs = load_dataset(images=[str(folder), str(tmp_path / "other")],
                                        val_count=2)
    names = set(train_imgs) | set(val_imgs)
    assert names == {"images/im0.png", "images/im1.png", "images/im2.png", "images/im3.png",
                     "other/sub/x.jpg"}
    assert len(val_imgs) == 2 and not set(train_imgs) & set(val_imgs)


def test_trainer_mixes_real_pairs_and_validates_on_the_holdout(image_folder, pair_folder, tmp_path):
    folder, splits = image_folder
    out = tmp_path / "mixed"
    argv = ["--images", str(folder), "--splits", str(splits), "--pairs", str(pair_folder),
            "--pair-val", "3", "--p-real", "0.5", "--out", str(out), "--steps", "2",
            "--exposure-target", "0.215", "--exposure-space", "linear",
            "--exposure-statistic", "robust", "--max-gain-rule", "quantisation"] + SMALL
    trainer = train.Trainer(train.build_parser().parse_args(argv))
    trainer.setup()
    assert trainer.n_real == 2 and len(trainer.pair_val_set) == 3
    held_out = {row[0] for row in trainer.pair_val_set}
    split = json.loads((out / "pair_splits.json").read_text())
    assert held_out == set(split["val"]) and not held_out & set(split["train"])
    assert len(trainer.pair_sampler.low.images) == 9  # only the training pairs are sampled
    # each held-out pair's gain is enhance()'s gain of the whole low image
    from msrnet_napari.exposure import image_exposure_gain
    from msrnet_napari.training.data import load_pairs
    from msrnet_napari.training.degrade import to_float

    _, val_pairs = load_pairs(pair_folder, out / "pair_splits.json")
    for stem, _low, _high, gain in trainer.pair_val_set:
        assert gain == pytest.approx(image_exposure_gain(trainer.config, to_float(val_pairs[stem][0])))
    trainer.fit()
    val = trainer.finish()
    assert set(val["pairs"]) == {"psnr", "ssim", "gt_mean_psnr", "n"} and val["pairs"]["n"] == 3
    assert val["pairs"]["gt_mean_psnr"] >= val["pairs"]["psnr"] - 1.0
    last = torch.load(out / "last.pt", weights_only=True)
    assert sorted(last["val_pair_stems"]) == sorted(held_out) and "val_score" in last
    assert last["config"]["exposure_statistic"] == "robust"
    # pairs only (--p-real 1, no photos)
    only = ["--pairs", str(pair_folder), "--pair-val", "3", "--p-real", "1",
            "--out", str(tmp_path / "only"), "--steps", "1"] + SMALL
    assert train.main(only) == 0
    with pytest.raises(SystemExit, match="p-real"):
        train.main(only[:-len(SMALL)] + ["--p-real", "0.5"] + SMALL)


def test_gt_mean_psnr_ignores_the_overall_brightness():
    from msrnet_napari.training.metrics import gt_mean_psnr, psnr

    rng = np.random.default_rng(0)
    ref = rng.uniform(0.1, 0.6, (32, 32, 3))
    assert psnr(ref, ref * 0.5) < 15
    assert gt_mean_psnr(ref, ref * 0.5) > 60  # exactly the reference once its mean matches
    noisy = np.clip(ref + rng.normal(0, 0.02, ref.shape), 0, 1)
    assert gt_mean_psnr(ref, noisy * 0.7) == pytest.approx(psnr(ref, noisy), abs=0.3)


def test_val_set_gain_follows_any_exposure_rule():
    """The synthetic validation entries keep whole-image summaries, so a v2 rule (e.g. in
    training/average.py's validation) gets enhance()'s gain of the whole dark image."""
    from msrnet_napari.exposure import image_exposure_gain
    from msrnet_napari.training.degrade import darken, to_float

    img = np.zeros((64, 64, 3), dtype=np.uint8)
    img[:, :40] = 120
    img[:4, :4] = 255  # a light source
    entry = train.make_val_set({"x": img}, 16)[3]
    v2 = MSRNetConfig(exposure_target=0.215, exposure_space="linear", exposure_statistic="robust",
                      max_gain_rule="quantisation", black_step=0.2)
    whole = darken(to_float(img), entry[0])
    assert train.val_gain(v2, entry[3]) == pytest.approx(image_exposure_gain(v2, whole), rel=1e-9)
    v1 = MSRNetConfig(exposure_target=0.215, exposure_space="linear")
    assert train.val_gain(v1, entry[3]) == pytest.approx(image_exposure_gain(v1, whole), rel=1e-6)
