"""Train MSR-net on synthetic and real low-light pairs (console script ``msrnet-train``).

Defaults follow the paper (Shen et al. 2017): Adam, lr 1e-4, MSE loss, weight
decay (L2 penalty, ``lambda * ||W||^2`` on the convolution weights - coupled,
i.e. Adam's ``weight_decay``, not AdamW), batch 64. Examples::

    msrnet-train --images data/images --splits data/splits.json --out runs/x
    msrnet-train --pack data/pack.npz --out runs/gpu --device cuda \\
        --time-limit 330 --lr 1e-3 --schedule cosine --warmup 200
    msrnet-train --pairs ../shared/data/lol_train --images ../shared/data/photos \\
        --val-images 12 --p-real 0.5 --out runs/photo_v2      (see scripts/train_photo_v2.sh)

Real pairs (``--pairs DIR`` with ``low/`` and ``high/``, same stems): a fixed holdout
of ``--pair-val`` pairs (sha256 order of the stems; the split is written to / read from
``--pair-splits``, default OUT/pair_splits.json) is never trained on and validated on
(PSNR, SSIM and GT-mean PSNR of 256-pixel centre crops). A share ``--p-real`` of every
batch is cut from the training pairs, each crop with the exposure gain of its WHOLE low
image, as enhance() decides it; the rest is synthetic (``--images`` / ``--pack``).

Checkpoints (``model.save_checkpoint``): ``last.pt`` (with optimizer state,
for ``--resume``) after every validation and at the end; ``best.pt`` (weights
+ metrics only) whenever the mean validation PSNR improves. Validation uses the
held-out images darkened deterministically at levels 1-4
(:func:`msrnet_napari.training.degrade.darken`); PSNR/SSIM of the clipped output.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

T_START = time.monotonic()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msrnet-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("data")
    src.add_argument("--images", action="append",
                     help="folder (or folder tree) of training photos; repeatable")
    src.add_argument("--splits", help="splits.json (train/val image names; one --images folder)")
    src.add_argument("--val-images", type=int, default=0,
                     help="hold out exactly this many photos for the synthetic validation "
                          "(sha256 order; 0 = 15 %% or --splits)")
    src.add_argument("--pairs", help="folder with low/ and high/ real pairs (same stems)")
    src.add_argument("--pair-splits", help="split of the pairs (JSON, read if it exists, else "
                                           "written; default OUT/pair_splits.json)")
    src.add_argument("--pair-val", type=int, default=30,
                     help="pairs held out for validation (fixed by stem hash)")
    src.add_argument("--p-real", type=float, default=0.5,
                     help="share of every batch cut from the real training pairs (with --pairs)")
    src.add_argument("--pack", help="data pack .npz (alternative to --images/--splits)")
    p.add_argument("--out", required=True, help="output folder for last.pt / best.pt")
    p.add_argument("--steps", type=int, default=100_000, help="total optimizer steps")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--crop", type=int, default=64, help="training crop size (pixels)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-6,
                   help="L2 penalty on conv weights (Adam weight_decay; biases excluded)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="cosine decays to lr*min-lr-frac over --steps or --time-limit, "
                        "whichever is reached first (--time-limit counts per invocation, so "
                        "a resumed time-limited run restarts the cosine)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--min-lr-frac", type=float, default=0.02)
    p.add_argument("--clip-grad", type=float, default=0.0, help="max grad norm (0 = off)")
    p.add_argument("--degrade", choices=("mixed", "sensor", "gamma"), default="mixed")
    p.add_argument("--gain-from", choices=("image", "crop"), default="image",
                   help="exposure normalisation: take a crop's gain from its whole darkened "
                        "source image (as enhance() does; estimated from --context-pixels "
                        "random pixels darkened alike) or from the crop itself")
    p.add_argument("--context-pixels", type=int, default=1024)
    p.add_argument("--p-sensor", type=float, default=0.5,
                   help="with --degrade mixed: probability of the sensor model per crop "
                        "(else the paper's gamma model)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init", help="start from the weights of this checkpoint")
    p.add_argument("--identity-start", action="store_true",
                   help="start as the identity on the exposure-normalised input "
                        "(model.identity_start; keeps f2's 3x3 convs, e.g. from --init)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--amp", choices=("none", "bf16"), default="none",
                   help="autocast precision on cuda (TF32 is always allowed)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (cuda)")
    p.add_argument("--val-every", type=int, default=500, help="validate every N steps")
    p.add_argument("--val-every-s", type=float, default=0.0,
                   help="also validate when this many seconds passed since the last one")
    p.add_argument("--val-size", type=int, default=256,
                   help="center-crop validation images to this size (0 = full image)")
    p.add_argument("--keep-val-checkpoints", action="store_true",
                   help="also keep the weights of every validation as OUT/val_step<N>.pt "
                        "(e.g. to average them: scripts/average_checkpoints.py)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--time-limit", type=float, default=0.0,
                   help="wall seconds (from process start) after which training stops "
                        "cleanly, validates and saves (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    m = p.add_argument_group("model (ignored on --resume: the checkpoint's config is used)")
    m.add_argument("--depth", type=int, default=10)
    m.add_argument("--width", type=int, default=32)
    m.add_argument("--f1-width", type=int, default=3)
    m.add_argument("--log-bases", default="1,10,100,300")
    m.add_argument("--exposure-target", type=float, default=None,
                   help="exposure normalisation before f1: re-expose dark inputs so their "
                        "mean reaches this value (0 = off, as in the paper; default 0, or "
                        "the --init checkpoint's)")
    m.add_argument("--exposure-space", choices=("display", "linear"), default=None,
                   help="where the exposure gain applies and its mean is taken: display "
                        "(sRGB values) or linear light (default display, or the --init "
                        "checkpoint's)")
    m.add_argument("--exposure-statistic", choices=("mean", "robust"), default=None,
                   help="the gain's statistic: mean, or robust (brightest --exposure-trim "
                        "clipped); default mean or the --init checkpoint's")
    m.add_argument("--exposure-trim", type=float, default=None,
                   help="with robust: fraction of the brightest pixels clipped (e.g. 0.02)")
    m.add_argument("--max-gain-rule", choices=("fixed", "quantisation"), default=None,
                   help="fixed max gain, or also bounded by the data's quantisation step")
    m.add_argument("--black-step", type=float, default=None,
                   help="with quantisation: the display value one quantisation step above "
                        "black may reach after the gain (e.g. 0.25)")
    m.add_argument("--noise-floor", type=float, default=None,
                   help="with quantisation: smallest step assumed (exposure-space units)")
    return p


EXPOSURE_OPTIONS = ("exposure_target", "exposure_space", "exposure_statistic", "exposure_trim",
                    "max_gain_rule", "black_step", "noise_floor")


def _with_exposure(config, args):
    """config with the exposure settings given on the command line (if any)."""
    import dataclasses

    changes = {k: getattr(args, k) for k in EXPOSURE_OPTIONS
               if getattr(args, k, None) is not None}
    return dataclasses.replace(config, **changes) if changes else config


def pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    return dev


def make_optimizer(model, lr: float, weight_decay: float):
    """Adam; L2 weight decay only on conv weights (the paper's lambda*||W||^2)."""
    import torch

    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return torch.optim.Adam([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def train_step(model, optimizer, dark, bright, clip_grad: float = 0.0, amp=None,
               gain=None) -> float:
    """One optimizer step of MSE(model(dark, gain), bright); returns the loss (float tensor)."""
    import torch
    import torch.nn.functional as F

    optimizer.zero_grad(set_to_none=True)
    if amp is not None:
        with torch.autocast(device_type=dark.device.type, dtype=amp):
            pred = model(dark, gain)
    else:
        pred = model(dark, gain)
    loss = F.mse_loss(pred.float(), bright)
    loss.backward()
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()
    return loss.detach()


def lr_at(step: int, args, elapsed: float, budget: float) -> float:
    if args.warmup and step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.schedule == "constant":
        return args.lr
    p = step / max(1, args.steps)
    if budget > 0:
        p = max(p, elapsed / budget)
    p = min(1.0, max(0.0, p))
    lo = args.lr * args.min_lr_frac
    return lo + 0.5 * (args.lr - lo) * (1 + math.cos(math.pi * p))


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    if size <= 0:
        return img
    h, w = img.shape[:2]
    th, tw = min(h, size), min(w, size)
    y, x = (h - th) // 2, (w - tw) // 2
    return img[y:y + th, x:x + tw]


def make_val_set(val: dict[str, np.ndarray], size: int) -> list[tuple]:
    """[(level, dark float32 HxWx3, bright float32 HxWx3, means)] - fixed, deterministic.

    Each whole image is darkened, then centre-cropped; ``means`` maps an exposure
    space to the mean of the whole dark image in it, and "summaries" to its
    :class:`~msrnet_napari.exposure.ExposureSummary` per space, so the exposure gain is
    the one enhance() would use for the whole image, under any exposure rule
    (:func:`val_gain`).
    """
    from ..config import EXPOSURE_SPACES
    from ..exposure import exposure_statistic, exposure_summary
    from .degrade import DARKEN_LEVELS, darken, to_float

    out = []
    for img in val.values():
        whole = to_float(img)
        bright = center_crop(whole, size)
        for level in DARKEN_LEVELS:
            dark = darken(whole, level)
            means = {}
            for space in EXPOSURE_SPACES:
                total, count = exposure_statistic(dark, space)
                means[space] = total / count
            means["summaries"] = {space: exposure_summary(dark, space)
                                  for space in EXPOSURE_SPACES}
            out.append((level, np.ascontiguousarray(center_crop(dark, size)), bright, means))
    return out


def val_gain(config, means: dict) -> float:
    """The whole-image gain of a validation entry under ``config``'s exposure rule."""
    from ..exposure import summary_gain

    space = config.exposure_space
    if (config.exposure_statistic == "mean" and config.max_gain_rule == "fixed") \
            or "summaries" not in means:
        return config.exposure_gain(means[space])
    return summary_gain(config, means["summaries"][space])


def _predict(model, image, gain, device, amp=None) -> np.ndarray:
    """The model's clipped output (HxWx3 float32) for one HxWx3 image, under autocast with
    ``amp`` (a dtype) when given; call under ``torch.no_grad()``."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
    if amp is not None:
        with torch.autocast(device_type=device.type, dtype=amp):
            y = model(x, gain)
    else:
        y = model(x, gain)
    return y.float().clamp_(0, 1)[0].permute(1, 2, 0).cpu().numpy()


def _ssim_or_nan(reference, y) -> float:
    from .metrics import ssim

    try:
        return ssim(reference, y)
    except ImportError:  # scikit-image missing: PSNR only
        return float("nan")


def evaluate(model, val_set, device, amp=None) -> dict[str, Any]:
    """Mean PSNR/SSIM (clipped output) over the validation set, also per level."""
    import torch

    from .metrics import psnr

    per_level: dict[int, list[tuple[float, float]]] = {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for level, dark, bright, means in val_set:
            y = _predict(model, dark, val_gain(model.config, means), device, amp)
            s = _ssim_or_nan(bright, y)
            per_level.setdefault(level, []).append((psnr(bright, y), s))
    model.train(was_training)
    levels = {str(k): [float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v]))]
              for k, v in sorted(per_level.items())}
    allv = [t for v in per_level.values() for t in v]
    return {"psnr": float(np.mean([a for a, _ in allv])) if allv else float("nan"),
            "ssim": float(np.mean([b for _, b in allv])) if allv else float("nan"),
            "levels": levels}


EIGHT_BIT = 1.0 / 255.0


def pair_gains(pairs: dict, config) -> dict[str, float]:
    """stem -> the exposure gain of the WHOLE low image (uint8: quantisation step 1/255),
    the same rule and numbers as enhance() on that image."""
    from ..exposure import image_exposure_gain
    from .degrade import to_float

    return {stem: image_exposure_gain(config, to_float(low), step=EIGHT_BIT)
            for stem, (low, _) in pairs.items()}


def make_pair_val_set(pairs: dict, size: int, config) -> list[tuple]:
    """[(stem, low crop float32 HxWx3, high crop, gain of the whole low image)]."""
    from .degrade import to_float

    gains = pair_gains(pairs, config)
    return [(stem, np.ascontiguousarray(center_crop(to_float(low), size)),
             np.ascontiguousarray(center_crop(to_float(high), size)), gains[stem])
            for stem, (low, high) in pairs.items()]


def evaluate_pairs(model, pair_set, device, amp=None) -> dict[str, Any]:
    """Mean PSNR / SSIM / GT-mean PSNR (clipped output) over the held-out real pairs."""
    import torch

    from .metrics import gt_mean_psnr, psnr

    rows = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _stem, low, high, gain in pair_set:
            y = _predict(model, low, gain, device, amp)
            s = _ssim_or_nan(high, y)
            rows.append((psnr(high, y), s, gt_mean_psnr(high, y)))
    model.train(was_training)
    m = np.mean(rows, axis=0) if rows else [float("nan")] * 3
    return {"psnr": float(m[0]), "ssim": float(m[1]), "gt_mean_psnr": float(m[2]),
            "n": len(rows)}


def fmt_time(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def plain_args(args) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}


@dataclass
class Trainer:
    """The photo trainer: :meth:`setup`, then :meth:`step` ... with :meth:`validate`
    (which also :meth:`save` s) every ``--val-every`` steps - the loop of :meth:`fit` -
    and :meth:`finish`. Resumable (``--resume``: OUT/last.pt holds the optimizer state).

    ``t0`` is the start of the wall clock that ``--time-limit`` counts from.
    """

    args: Any
    t0: float = field(default_factory=time.monotonic)
    step_no: int = 0
    best_psnr: float = -math.inf
    train_seconds: float = 0.0  # training time of earlier runs (--resume)
    val_cost: float = 0.0  # seconds the last validation took
    last_val: dict = field(default_factory=lambda: {"psnr": float("nan"), "ssim": float("nan"),
                                                    "levels": {}})
    validated_step: int = -1
    validated_t: float = 0.0
    t_loop: float = 0.0  # when this run's training (and its train_seconds) began
    device: Any = None
    amp: Any = None
    params: Any = None
    config: Any = None
    model: Any = None
    optimizer: Any = None
    sampler: Any = None
    generator: Any = None
    val_set: list = field(default_factory=list)
    pair_val_set: list = field(default_factory=list)
    pair_sampler: Any = None
    n_real: int = 0  # real-pair crops per batch
    quant_step: Any = None  # quantisation step of the synthetic dark images
    image_gain: bool = False

    @property
    def out(self) -> Path:
        return Path(self.args.out)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Device, data, model (new, --init or --resume), optimizer, sampler, val set."""
        import torch

        from .data import CropSampler, load_dataset
        from .degrade import LowLightParams

        args = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        device = self.device = pick_device(args.device)
        self.params = LowLightParams(p_sensor=args.p_sensor)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.amp = torch.bfloat16 if (args.amp == "bf16" and device.type == "cuda") else None

        train_imgs, val_imgs = {}, {}
        if args.images or args.pack:
            train_imgs, val_imgs = load_dataset(images=args.images, splits=args.splits,
                                                pack=args.pack, val_count=args.val_images)
        train_pairs, val_pairs = {}, {}
        if args.pairs:
            from .data import load_pairs

            split_file = args.pair_splits or str(self.out / "pair_splits.json")
            train_pairs, val_pairs = load_pairs(args.pairs, split_file, args.pair_val)
            print(f"pairs: {len(train_pairs)} train, {len(val_pairs)} held out "
                  f"(split {split_file})", flush=True)
        n_px = sum(a.shape[0] * a.shape[1] for a in train_imgs.values())
        print(f"data: {len(train_imgs)} train images ({n_px / 1e6:.1f} MP), {len(val_imgs)} val; "
              f"device {device}"
              + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                 f", {torch.get_num_threads()} threads"), flush=True)

        self._setup_model()
        step = self.step_no
        self.sampler = CropSampler(list(train_imgs.values()), args.crop, device=device,
                                   seed=args.seed * 1_000_003 + step) if train_imgs else None
        self.generator = torch.Generator(device=device).manual_seed(args.seed * 7919 + step + 1)
        self.val_set = make_val_set(val_imgs, args.val_size)
        self.image_gain = (self.config.exposure_target > 0 and args.gain_from == "image"
                           and args.context_pixels > 0)
        self.quant_step = 1.0 / (2 ** self.params.bits - 1) if self.params.bits else None
        if train_pairs and args.p_real > 0:
            from .data import PairSampler

            gains = pair_gains(train_pairs, self.config)
            self.pair_sampler = PairSampler(list(train_pairs.values()), list(gains.values()),
                                            args.crop, device=device,
                                            seed=args.seed * 1_000_033 + step + 7)
            self.n_real = min(args.batch, int(round(args.p_real * args.batch)))
            g = np.array(list(gains.values()))
            print(f"real pairs: {self.n_real} of {args.batch} crops per batch; gains of the "
                  f"whole low images: median {np.median(g):.1f}, max {g.max():.1f}", flush=True)
        if val_pairs:
            self.pair_val_set = make_pair_val_set(val_pairs, args.val_size, self.config)
        if not train_imgs and self.n_real < args.batch:
            raise SystemExit("msrnet-train: no photos for the synthetic share (--p-real < 1)")
        self.validated_t = self.t_loop = time.monotonic()

    def _setup_model(self) -> None:
        import torch

        from ..config import MSRNetConfig
        from .model import MSRNet, identity_start, init_weights

        args = self.args
        resume_path = self.out / "last.pt"
        payload = None
        if args.resume:
            if not resume_path.is_file():
                raise SystemExit(f"--resume: {resume_path} does not exist")
            payload = torch.load(resume_path, map_location="cpu", weights_only=True)
            config = MSRNetConfig.from_dict(payload["config"])
        elif args.init:  # any checkpoint the safe loader reads (also bare state_dicts)
            from ..checkpoint import load_checkpoint

            ckpt = load_checkpoint(args.init)
            config = _with_exposure(ckpt.config, args)
            payload = {"state_dict": {k: torch.from_numpy(v.copy()) for k, v in ckpt.weights.items()}}
        else:
            bases = tuple(float(v) for v in str(args.log_bases).split(",") if v.strip())
            config = _with_exposure(MSRNetConfig(log_bases=bases, depth=args.depth, width=args.width,
                                                 f1_width=args.f1_width), args)
        torch.manual_seed(args.seed)
        model = init_weights(MSRNet(config), seed=args.seed)
        if payload is not None:
            model.load_state_dict(payload["state_dict"])
        if args.identity_start and not args.resume:
            identity_start(model)
        model.to(self.device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, args.lr, args.weight_decay)
        if args.resume:
            if "optimizer" in payload:
                optimizer.load_state_dict(payload["optimizer"])
            self.step_no = int(payload.get("step", 0))
            self.best_psnr = float(payload.get("best_val_psnr",
                                               payload.get("val_psnr", -float("inf"))))
            self.train_seconds = float(payload.get("train_seconds", 0.0))
            print(f"resumed from {resume_path} at step {self.step_no} "
                  f"(best val PSNR {self.best_psnr:.2f})", flush=True)
        del payload
        self.config, self.model, self.optimizer = config, model, optimizer
        print(f"model: {config.to_dict()}, {sum(p.numel() for p in model.parameters())} params",
              flush=True)

    # ------------------------------------------------------------------ step
    def step(self, lr: float):
        """One optimizer step at learning rate ``lr`` on a fresh batch; returns the loss
        (a detached tensor, so that the caller does not synchronise every step)."""
        import torch

        from .degrade import synthesize_torch

        args, model = self.args, self.model
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        gain = None
        n_syn = args.batch - self.n_real
        if n_syn and self.image_gain:  # darken crop and context pixels with the same parameters
            bright, context = self.sampler.sample(n_syn, context=args.context_pixels)
            both = synthesize_torch(torch.cat([bright, context], dim=3), self.generator,
                                    params=self.params, mode=args.degrade)
            dark = both[..., :args.crop].contiguous()
            gain = model.exposure_gain(both[..., args.crop:], quantisation_step=self.quant_step)
        elif n_syn:
            bright = self.sampler.sample(n_syn)
            dark = synthesize_torch(bright, self.generator, params=self.params, mode=args.degrade)
        if self.n_real:
            low, high, real_gain = self.pair_sampler.sample(self.n_real)
            if self.config.exposure_target > 0 and gain is None and args.gain_from == "crop":
                real_gain = model.exposure_gain(low, quantisation_step=EIGHT_BIT)
            elif self.config.exposure_target > 0 and gain is None and n_syn:
                gain = model.exposure_gain(dark, quantisation_step=self.quant_step)
            if n_syn:
                dark, bright = torch.cat([dark, low]), torch.cat([bright, high])
                gain = torch.cat([gain, real_gain]) if gain is not None else None
            else:
                dark, bright, gain = low, high, real_gain
        if args.channels_last:
            bright = bright.contiguous(memory_format=torch.channels_last)
            dark = dark.contiguous(memory_format=torch.channels_last)
        loss = train_step(model, self.optimizer, dark, bright, args.clip_grad, self.amp, gain)
        self.step_no += 1
        return loss

    # ------------------------------------------------------------------ validate / save
    def save(self, kind: str, val: dict) -> None:
        """Write OUT/<kind>.pt; ``last`` also carries the optimizer state (for --resume)."""
        from .model import save_checkpoint

        best = self.best_psnr
        score = val.get("score", val["psnr"])
        extra = {
            "step": self.step_no,
            "val_psnr": val["psnr"],
            "val_ssim": val["ssim"],
            "val_levels": val["levels"],
            "best_val_psnr": max(best, score) if score == score else best,
            "train_seconds": self.train_seconds + (time.monotonic() - self.t_loop),
            "train_config": plain_args(self.args),
        }
        if "pairs" in val:
            extra["val_pairs"] = val["pairs"]
            extra["val_score"] = val["score"]
            extra["val_pair_stems"] = [row[0] for row in self.pair_val_set]
        if kind == "last":
            extra["optimizer"] = self.optimizer.state_dict()
        save_checkpoint(self.model, self.out / f"{kind}.pt", **extra)

    def validate(self) -> dict:
        """Validate, report, and save best.pt (when improved or missing), last.pt and,
        with --keep-val-checkpoints, val_step<N>.pt."""
        step, out = self.step_no, self.out
        self.validated_step = step
        tv = time.monotonic()
        val = evaluate(self.model, self.val_set, self.device, self.amp) if self.val_set \
            else dict(self.last_val)
        pairs_text = ""
        if self.pair_val_set:
            val["pairs"] = evaluate_pairs(self.model, self.pair_val_set, self.device, self.amp)
            parts = [v for v in (val["psnr"], val["pairs"]["psnr"]) if v == v]
            val["score"] = float(np.mean(parts)) if parts else float("nan")
            pp = val["pairs"]
            pairs_text = (f" | pairs PSNR {pp['psnr']:.3f} SSIM {pp['ssim']:.4f} GT-mean "
                          f"{pp['gt_mean_psnr']:.3f} | score {val['score']:.3f}")
        self.val_cost = time.monotonic() - tv
        levels = " ".join(f"L{k}:{v[0]:.2f}/{v[1]:.3f}" for k, v in val["levels"].items())
        score = val.get("score", val["psnr"])
        improved = score > self.best_psnr
        print(f"val step {step}: PSNR {val['psnr']:.3f} SSIM {val['ssim']:.4f} [{levels}]"
              f"{pairs_text} ({self.val_cost:.1f}s){' *best*' if improved else ''}", flush=True)
        if improved or not (out / "best.pt").exists():
            self.best_psnr = max(self.best_psnr, score)
            self.save("best", val)
        self.last_val = val
        self.save("last", val)
        if self.args.keep_val_checkpoints and step > 0:
            self.save(f"val_step{step}", val)
        self.validated_t = time.monotonic()
        return val

    # ------------------------------------------------------------------ loop
    def fit(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Train until --steps, --time-limit or ``stop()``, validating (and saving) at
        step 0 and every --val-every steps / --val-every-s seconds; then call :meth:`finish`."""
        import torch

        args, t0 = self.args, self.t0
        self.validated_step, self.validated_t = -1, time.monotonic()
        budget = args.time_limit
        start_step = self.step_no
        self.t_loop = time.monotonic()
        t_log, step_log, n_acc = self.t_loop, self.step_no, 0
        loss_sum = torch.zeros((), device=self.device)
        if self.step_no == 0 and (self.val_set or self.pair_val_set):
            self.validate()  # untrained baseline; also measures the cost of a validation
        self.model.train()
        print(f"training from step {self.step_no} to {args.steps}"
              + (f", time limit {budget:.0f}s" if budget else ""), flush=True)
        while self.step_no < args.steps and not stop():
            elapsed = time.monotonic() - t0
            if budget and elapsed + 1.5 * self.val_cost + 5.0 >= budget:
                print(f"time limit reached ({elapsed:.0f}s of {budget:.0f}s)", flush=True)
                break
            lr = lr_at(self.step_no, args, elapsed, budget)
            loss_sum += self.step(lr)
            n_acc += 1
            step = self.step_no
            if step % args.log_every == 0 or step == args.steps:
                loss = float(loss_sum) / max(1, n_acc)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {step}")
                now = time.monotonic()
                rate = (step - step_log) * args.batch / max(now - t_log, 1e-9)
                steps_per_s = (step - start_step) / max(now - self.t_loop, 1e-9)
                eta = (args.steps - step) / max(steps_per_s, 1e-9)
                if budget:
                    eta = min(eta, budget - (now - t0))
                print(f"step {step}/{args.steps} loss {loss:.5f} lr {lr:.2e} "
                      f"{rate:.0f} img/s {steps_per_s:.2f} it/s elapsed {fmt_time(now - t0)} "
                      f"ETA {fmt_time(eta)}", flush=True)
                t_log, step_log, n_acc = now, step, 0
                loss_sum.zero_()
            if (args.val_every and step % args.val_every == 0) or (
                    args.val_every_s and time.monotonic() - self.validated_t >= args.val_every_s):
                self.validate()

    def finish(self) -> dict:
        """Validate and save unless the last step was just validated; the last validation."""
        if self.validated_step != self.step_no or not (self.out / "last.pt").exists():
            return self.validate()
        return self.last_val


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.pack and not args.images and not args.pairs:
        raise SystemExit("msrnet-train: give --pack, --images (with --splits) or --pairs")
    for name in ("p_sensor", "p_real"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise SystemExit(f"msrnet-train: --{name.replace('_', '-')} must lie in [0, 1], "
                             f"got {getattr(args, name)}")
    if not args.pack and not args.images and args.p_real < 1.0:
        raise SystemExit("msrnet-train: without photos (--images / --pack) --p-real must be 1")

    trainer = Trainer(args, t0=T_START if argv is None else time.monotonic())
    trainer.setup()
    stop = {"flag": False}

    def on_signal(signum, frame):  # noqa: ARG001
        print(f"signal {signum}: stopping after this step", flush=True)
        stop["flag"] = True

    old_handlers = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            old_handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread
            pass
    try:
        trainer.fit(lambda: stop["flag"])
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    val = trainer.finish()
    total = time.monotonic() - trainer.t0
    print(f"done: step {trainer.step_no}, best val PSNR {trainer.best_psnr:.3f}, "
          f"last {val['psnr']:.3f}, wall {total:.0f}s -> {trainer.out / 'best.pt'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
