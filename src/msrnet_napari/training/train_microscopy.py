"""Train the microscopy (linear intensity) MSR-net (console script ``msrnet-train-microscopy``).

Serves **scientific imagery**: the network learns to restore linear sensor data
(denoise, keep the dark level and the intensities) in the network space of
:mod:`msrnet_napari.linear_intensity`. Pairs come from
:mod:`msrnet_napari.training.microscopy_data`; whole W2S fields and DSB images
are held out. Example::

    msrnet-train-microscopy --data ../shared/data --photos ../shared/data/photos/bsds \\
        --out runs/micro --time-limit 3600 --threads 2

Writes ``OUT/last.pt`` (with optimizer state, ``--resume`` continues from it)
and ``OUT/best.pt`` (best mean validation PSNR) after every validation.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: default floor of a crop's MSE in the 'logmse' loss (network units: 60 dB), so that a
#: crop the network already restores almost exactly does not get an unbounded weight
LOG_MSE_FLOOR = 1e-6


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msrnet-train-microscopy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the shared data folder (microscopy/...)")
    p.add_argument("--photos", help="folder of photos used as extra clean texture")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--time-limit", type=float, default=0.0, help="wall seconds (0 = none)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.03)
    p.add_argument("--weight-decay", type=float, default=1e-6)
    p.add_argument("--p-real", type=float, default=0.3, help="share of real W2S pairs")
    p.add_argument("--init", help="take f2's 3x3 convolutions from this checkpoint "
                                  "(then start as the identity, model.identity_start)")
    p.add_argument("--init-full", help="start from all weights of this linear checkpoint "
                                       "(fine-tuning; no identity start)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--val-every-s", type=float, default=600.0)
    p.add_argument("--val-size", type=int, default=192)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--low-photon-share", type=float, default=0.0,
                   help="share of synthetic exposures drawn log-uniform in 2-30 photons at the "
                        "peak instead of 2-3000 (more practice at the noisiest levels)")
    p.add_argument("--peak-photons", type=float, nargs=2, default=(2.0, 3000.0),
                   metavar=("LO", "HI"),
                   help="log-uniform range of the photons at the brightest clean pixel of the "
                        "synthetic exposures (a regime specialist trains on part of it)")
    p.add_argument("--range-share", type=float, default=0.0,
                   help="share of synthetic exposures whose whole image has another dynamic "
                        "range than the crop (a much brighter object elsewhere, or a dimmer "
                        "rest of the image): practice for high-dynamic-range data")
    p.add_argument("--val-groups", nargs="+", default=None, metavar="GROUP",
                   help="validation groups (p3 p10 p30 p100 p1000 w2s) whose mean PSNR picks "
                        "best.pt (default: all)")
    p.add_argument("--val-binning", choices=("auto", "1"), default="auto",
                   help="validate like the product: 'auto' restores each validation crop "
                        "2x2-binned (cycle-spun) where its SNR is below the binning threshold, "
                        "as enhance() does; '1': always at full resolution")
    p.add_argument("--loss", choices=("mse", "logmse", "noisemse"), default="mse",
                   help="'mse': the batch's mean squared error (crops at a few photons, whose "
                        "errors are largest, dominate it); 'logmse': the mean over crops of "
                        "log(MSE + --log-floor), i.e. the mean PSNR per crop - what the validation "
                        "and eval_microscopy average - so every photon level counts alike; "
                        "'noisemse': each crop's MSE weighted by 1 / (its input's noise RMS), "
                        "normalised over the batch - between the two: a crop with 10x less noise "
                        "counts 10x more than under 'mse', not 100x")
    p.add_argument("--log-floor", type=float, default=LOG_MSE_FLOOR,
                   help="'logmse': floor added to each crop's MSE (network units; 1e-6 = 60 dB), "
                        "so crops restored better than that stop gaining weight")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    return p


def crop_loss(out, target, kind: str, floor: float = LOG_MSE_FLOOR, noisy=None):
    """The training loss of a batch (torch tensors N x C x H x W); see --loss.
    ``noisy``: the network's input, for 'noisemse' (each crop's noise is its input's
    RMS difference from the target)."""
    import torch

    if kind == "mse":
        return torch.mean((out - target) ** 2)
    dims = tuple(range(1, out.ndim))
    per_crop = torch.mean((out - target) ** 2, dim=dims)
    if kind == "noisemse":
        if noisy is None:
            raise ValueError("the 'noisemse' loss needs the noisy input")
        weight = 1.0 / torch.sqrt(torch.mean((noisy - target) ** 2, dim=dims) + floor)
        weight = (weight / weight.mean()).detach()
        return torch.mean(weight * per_crop)
    return torch.mean(torch.log(per_crop + floor))


def cosine_lr(args, progress: float) -> float:
    lo = args.lr * args.min_lr_frac
    return lo + 0.5 * (args.lr - lo) * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def network_inputs(x: np.ndarray, conditions: np.ndarray | None) -> np.ndarray:
    """N x 3 x H x W network input of a batch of N x H x W crops: three copies, or (the
    noise_input model) each crop and its N x 2 noise level as two constant planes."""
    out = np.repeat(x[:, None], 3, axis=1)
    if conditions is not None:
        out[:, 1:] = conditions[:, :, None, None]
    return out


def network_input(x: np.ndarray, condition, factor: int = 1) -> np.ndarray:
    """H x W x 3 input of one crop restored ``factor`` x ``factor`` binned (its noise
    level divided by ``factor``, as enhance() does: ChannelMapping.noise_condition)."""
    from ..linear_intensity import network_input as plane_input

    return plane_input(x, None if condition is None
                       else (condition[0] / factor, condition[1] / factor))


def val_binning(x: np.ndarray) -> int:
    """The binning factor enhance() would choose for a validation crop ``x`` (network
    units): the linear model's rule on its signal-to-noise ratio, the network's
    reference level (SPAN above the pedestal) over the noise at its bright structures."""
    from ..linear_intensity import PEDESTAL, SPAN, ChannelMapping, choose_binning, signal_noise

    mapping = ChannelMapping(dark=PEDESTAL, scale=SPAN,
                             signal_noise=signal_noise(x, PEDESTAL, SPAN))
    return choose_binning(mapping.snr)


@dataclass
class Trainer:
    """setup -> step ... validate / save; resumable."""

    args: Any
    model: Any = None
    optimizer: Any = None
    sampler: Any = None
    val_set: Any = None
    step_no: int = 0
    best: float = -math.inf
    seconds: float = 0.0

    def setup(self) -> None:
        import torch

        from ..config import MSRNetConfig
        from . import microscopy_data as md
        from .model import MSRNet, identity_start, init_weights
        from .train import make_optimizer

        a = self.args
        if a.threads > 0:
            torch.set_num_threads(a.threads)
        data = md.load(a.data, a.photos)
        print(f"data: {len(data.train_clean)} clean + {len(data.train_real)} real train, "
              f"{len(data.val_clean)} clean + {len(data.val_real)} real val", flush=True)
        params = md.SensorParams(p_low=a.low_photon_share, p_range=a.range_share,
                                 peak_photons=(float(a.peak_photons[0]), float(a.peak_photons[1])))
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = None
        if a.resume:
            payload = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
            config = MSRNetConfig.from_dict(payload["config"])
        else:
            config = MSRNetConfig(intensity="linear")
        init_full = None
        if payload is None and a.init_full:
            from ..checkpoint import load_checkpoint

            init_full = load_checkpoint(a.init_full)
            # the linear model's config; f2's width and depth may differ (training/widen.py)
            grown = replace(config, width=init_full.config.width, depth=init_full.config.depth,
                            noise_input=init_full.config.noise_input)
            if init_full.config != grown:
                raise SystemExit(f"--init-full: {a.init_full} has config {init_full.config}, "
                                 f"expected {config} (width, depth and noise_input may "
                                 f"differ)")
            config = grown
        self.sampler = md.BatchSampler(data, a.crop, seed=a.seed, p_real=a.p_real,
                                       params=params, condition=config.noise_input)
        self.val_set = md.validation_set(data, a.val_size, condition=config.noise_input)
        torch.manual_seed(a.seed)
        self.model = init_weights(MSRNet(config), seed=a.seed)
        if payload is not None:
            self.model.load_state_dict(payload["state_dict"])
        elif init_full is not None:
            self.model.load_state_dict({k: torch.from_numpy(v.copy())
                                        for k, v in init_full.weights.items()})
        else:
            if a.init:
                from ..checkpoint import load_checkpoint

                w = load_checkpoint(a.init).weights
                with torch.no_grad():
                    for name, t in self.model.state_dict().items():
                        if (name.startswith("f2.convs.") and name in w
                                and tuple(w[name].shape) == tuple(t.shape)):
                            t.copy_(torch.from_numpy(w[name].copy()))
            identity_start(self.model, fit_max=2.5)
        self.optimizer = make_optimizer(self.model, a.lr, a.weight_decay)
        if payload is not None:
            self.optimizer.load_state_dict(payload["optimizer"])
            self.step_no = int(payload["step"])
            self.best = float(payload.get("best_val_psnr", -math.inf))
            self.seconds = float(payload.get("train_seconds", 0.0))
            self.sampler.rng = np.random.default_rng(a.seed + 7919 * self.step_no)
            print(f"resumed at step {self.step_no}", flush=True)

    def step(self, lr: float) -> float:
        import torch

        x, y, *cond = self.sampler.sample(self.args.batch)
        xt = torch.from_numpy(network_inputs(x, cond[0] if cond else None))
        yt = torch.from_numpy(np.repeat(y[:, None], 3, axis=1))
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss = crop_loss(self.model(xt), yt, self.args.loss, self.args.log_floor, noisy=xt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.step_no += 1
        return float(loss.detach())

    def validate(self) -> dict[str, Any]:
        """Mean PSNR in network units (peak 1) per group (photon level / real W2S);
        ``psnr`` is the mean over ``--val-groups`` (all groups by default). With
        ``--val-binning auto`` each crop goes the product's way: binned where
        :func:`val_binning` says enhance() would bin it."""
        import torch

        from ..binning import run_binned
        from ..linear_intensity import UPPER_CLIP

        def run(u: np.ndarray, _progress=None) -> np.ndarray:  # H x W x 3 -> H x W x 3
            t = torch.from_numpy(np.ascontiguousarray(u.transpose(2, 0, 1))[None])
            return self.model(t)[0].numpy().transpose(1, 2, 0)

        groups: dict[str, list[float]] = {}
        self.model.eval()
        with torch.no_grad():
            for label, x, y, *cond in self.val_set:
                factor = val_binning(x) if self.args.val_binning == "auto" else 1
                u = network_input(x, cond[0] if cond else None, factor)
                out = run_binned(run, u, factor, ceiling=UPPER_CLIP).mean(-1)
                mse = float(np.mean((out - y) ** 2))
                groups.setdefault(label, []).append(10 * math.log10(1.0 / max(mse, 1e-12)))
        self.model.train()
        levels = {k: float(np.mean(v)) for k, v in groups.items()}
        picked = [levels[k] for k in (self.args.val_groups or levels) if k in levels]
        if not picked:
            raise SystemExit(f"--val-groups {self.args.val_groups}: none of {sorted(levels)}")
        return {"psnr": float(np.mean(picked)), "levels": levels}

    def save(self, name: str, val: dict[str, Any], with_optimizer: bool) -> None:
        from .model import save_checkpoint

        extra = {"step": self.step_no, "val_psnr": val["psnr"], "val_levels": val["levels"],
                 "best_val_psnr": max(self.best, val["psnr"]), "train_seconds": self.seconds,
                 "train_config": {k: v for k, v in vars(self.args).items()
                                  if isinstance(v, (int, float, str, bool, type(None)))}}
        if with_optimizer:
            extra["optimizer"] = self.optimizer.state_dict()
        save_checkpoint(self.model, Path(self.args.out) / f"{name}.pt", **extra)

    def checkpoint(self) -> None:
        t = time.monotonic()
        val = self.validate()
        levels = " ".join(f"{k}:{v:.2f}" for k, v in val["levels"].items())
        improved = val["psnr"] > self.best
        print(f"val step {self.step_no}: PSNR {val['psnr']:.3f} [{levels}] "
              f"({time.monotonic() - t:.0f}s){' *best*' if improved else ''}", flush=True)
        if improved:
            self.best = val["psnr"]
            self.save("best", val, with_optimizer=False)
        self.save("last", val, with_optimizer=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    trainer = Trainer(args)
    trainer.setup()
    stop = {"flag": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["flag"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    t0 = time.monotonic()
    seconds0 = trainer.seconds
    budget = args.time_limit
    if trainer.step_no == 0:
        trainer.checkpoint()
    last_val, t_log, losses = time.monotonic(), time.monotonic(), []
    while trainer.step_no < args.steps and not stop["flag"]:
        elapsed = time.monotonic() - t0
        if budget and elapsed >= budget:
            break
        progress = (seconds0 + elapsed) / (seconds0 + budget) if budget else trainer.step_no / args.steps
        losses.append(trainer.step(cosine_lr(args, progress)))
        trainer.seconds = seconds0 + (time.monotonic() - t0)
        if trainer.step_no % args.log_every == 0:
            now = time.monotonic()
            print(f"step {trainer.step_no} loss {np.mean(losses):.6f} "
                  f"{args.log_every / (now - t_log):.2f} it/s elapsed {elapsed:.0f}s", flush=True)
            t_log, losses = now, []
        if time.monotonic() - last_val >= args.val_every_s:
            trainer.checkpoint()
            last_val = time.monotonic()
    trainer.checkpoint()
    print(f"done: step {trainer.step_no}, best {trainer.best:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
