"""PyTorch reference implementation of MSR-net (training and parity tests only).

This module imports torch; nothing on the enhancement path imports it.
Install it with ``pip install msrnet-napari[torch]``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import exposure
from ..checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint
from ..config import CHANNELS, MSRNetConfig, parameter_shapes
from ..exposure import apply_exposure_gain, srgb_to_linear


class MultiScaleLog(nn.Module):
    """f1: multi-scale logarithmic transform, 1x1 fusion, ReLU, 3x3 conv."""

    def __init__(self, config: MSRNetConfig) -> None:
        super().__init__()
        bases = torch.tensor(config.log_bases, dtype=torch.float32)
        self.register_buffer("bases", bases, persistent=False)
        self.register_buffer("inv_log", 1.0 / torch.log1p(bases), persistent=False)
        self.fuse = nn.Conv2d(CHANNELS * config.n_scales, config.f1_width, 1)
        self.conv = nn.Conv2d(config.f1_width, CHANNELS, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # concat order: scale-major, i.e. [M_1(R,G,B), M_2(R,G,B), ...]
        logs = [torch.log1p(v * x) * s for v, s in zip(self.bases, self.inv_log)]
        return self.conv(torch.relu(self.fuse(torch.cat(logs, dim=1))))


class DifferenceOfConvolution(nn.Module):
    """f2: K stacked 3x3 conv+ReLU, 1x1 over their concatenation, subtracted."""

    def __init__(self, config: MSRNetConfig) -> None:
        super().__init__()
        w = config.width
        self.convs = nn.ModuleList(
            nn.Conv2d(CHANNELS if m == 0 else w, w, 3, padding=1) for m in range(config.depth)
        )
        self.fuse = nn.Conv2d(config.depth * w, CHANNELS, 1)

    def forward(self, x1: torch.Tensor) -> torch.Tensor:
        h, maps = x1, []
        for conv in self.convs:
            h = torch.relu(conv(h))
            maps.append(h)
        return x1 - self.fuse(torch.cat(maps, dim=1))


class MSRNet(nn.Module):
    """f(X) = f3(f2(f1(X))) on NCHW float input in [0, 1]."""

    def __init__(self, config: MSRNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or MSRNetConfig()
        self.f1 = MultiScaleLog(self.config)
        self.f2 = DifferenceOfConvolution(self.config)
        self.f3 = nn.Conv2d(CHANNELS, CHANNELS, 1)

    def forward(self, x: torch.Tensor, gain: torch.Tensor | float | None = None) -> torch.Tensor:
        """``gain``: the exposure gain per sample (N x 1 x 1 x 1 or a number); None = from
        ``x`` itself, as enhance() does for a whole image (see :meth:`normalise_exposure`)."""
        return self.f3(self.f2(self.f1(self.normalise_exposure(x, gain))))

    def normalise_exposure(self, x: torch.Tensor,
                           gain: torch.Tensor | float | None = None) -> torch.Tensor:
        """Re-expose ``x`` in config.exposure_space by ``gain``; by default the gain of
        config.exposure_gain for the mean of each whole sample (see msrnet_napari.exposure).

        Training passes the gain of the crop's whole (darkened) source image, because
        at inference the gain comes from the whole image, not from a tile.
        """
        cfg = self.config
        if cfg.exposure_target <= 0.0:
            return x
        if gain is None:
            gain = self.exposure_gain(x)
        return apply_exposure_gain(x, gain, cfg.exposure_space)

    def exposure_gain(self, x: torch.Tensor, quantisation_step: float | None = None
                      ) -> torch.Tensor:
        """The exposure gain of each sample of ``x`` (N x 1 x 1 x 1), by the one rule
        (:func:`msrnet_napari.exposure.exposure_gain`) that enhance() applies to a whole
        float image: the configured statistic (the robust one from the same
        :func:`~msrnet_napari.exposure.exposure_summary`), and the quantisation step
        detected from the 8-bit grid unless ``quantisation_step`` is given."""
        cfg = self.config
        x = x.detach().float()
        n = x.shape[0]
        if cfg.exposure_target <= 0.0:
            return torch.ones((n, 1, 1, 1), device=x.device)
        if quantisation_step is not None:
            step = torch.full((n,), float(quantisation_step), device=x.device)
        elif cfg.max_gain_rule == "fixed":
            step = torch.zeros((n,), device=x.device)
        else:
            step = exposure.quantisation_step(_grid_error(x))
        if cfg.exposure_statistic == "mean":
            stat = srgb_to_linear(x) if cfg.exposure_space == "linear" else x
            value = stat.mean(dim=(1, 2, 3))
        else:  # the numpy summary per sample: exactly enhance()'s statistic
            parts = [exposure.exposure_summary(s, cfg.exposure_space) for s in x.cpu().numpy()]
            value = torch.from_numpy(exposure.summary_statistic(
                np.stack([p.counts for p in parts]), np.stack([p.sums for p in parts]),
                "robust", cfg.exposure_trim)).float().to(x.device)
        gain = exposure.exposure_gain(cfg, value.clamp_min(1e-9), step)
        return gain.float().view(n, 1, 1, 1)


def _grid_error(x: torch.Tensor) -> torch.Tensor:
    """Per sample: the largest distance of a value from the 8-bit grid, in codes."""
    codes = x.clamp(0, 1) * 255.0
    return (codes - codes.round()).abs().amax(dim=tuple(range(1, x.dim())))


def init_weights(model: MSRNet, seed: int | None = None, gain: float = 1.0) -> MSRNet:
    """Deterministic random init (He-normal convs, small biases).

    The f2 1x1 fusion starts small and f3 starts near identity so that an
    untrained network is roughly X1, which trains faster.
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                std = gain * math.sqrt(2.0 / fan_in)
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.01)
        model.f2.fuse.weight.mul_(0.1)
        model.f3.weight.copy_(torch.eye(CHANNELS).view(CHANNELS, CHANNELS, 1, 1))
        model.f3.bias.zero_()
    return model


def identity_start(model: MSRNet, fit_max: float = 1.0) -> MSRNet:
    """Make the network (almost) the identity on its exposure-normalised input.

    f1's 1x1 fusion takes, per colour, the least-squares combination of the
    log scales that best fits ``y = x`` on [0, 1] (max error ~0.02 for the
    default bases), f1's 3x3 conv passes the colour through, f2's 1x1 fusion
    is zero (so H = 0 and X2 = X1) and f3 is the identity. f2's 3x3 convs are
    left as they are (e.g. features of a trained checkpoint). Training then
    learns a residual: denoising and colour, not the exposure, which the
    exposure normalisation has already set.
    """
    import numpy as np

    cfg = model.config
    x = np.linspace(0.0, fit_max, 2001)  # fit_max > 1: linear data above the reference
    v = np.asarray(cfg.log_bases)
    scales = np.log1p(v[None] * x[:, None]) / np.log1p(v)[None]
    coef = np.linalg.lstsq(scales, x, rcond=None)[0]
    with torch.no_grad():
        for param in (*model.f1.parameters(), *model.f2.fuse.parameters(), *model.f3.parameters()):
            param.zero_()
        for c in range(min(CHANNELS, cfg.f1_width)):
            for j, a in enumerate(coef):  # concat order: scale-major [M_j(R, G, B)]
                model.f1.fuse.weight[c, j * CHANNELS + c, 0, 0] = float(a)
            model.f1.conv.weight[c, c, 1, 1] = 1.0
        model.f3.weight.copy_(torch.eye(CHANNELS).view(CHANNELS, CHANNELS, 1, 1))
    return model


def save_checkpoint(model: MSRNet, path: str | Path, **extra: Any) -> Path:
    """Write a plain ``torch.save`` file: state_dict + config (+ extra metadata).

    ``extra`` (e.g. step, optimizer state, metrics) must hold only plain
    containers, numbers, strings and tensors so the safe loader can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    expected = parameter_shapes(model.config)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected, "model/config mismatch"
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
    return path


def model_from_checkpoint(path: str | Path) -> MSRNet:
    """Build the torch reference model from any checkpoint the safe loader reads."""
    ckpt = load_checkpoint(path)
    model = MSRNet(ckpt.config)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ckpt.weights.items()})
    return model.eval()
