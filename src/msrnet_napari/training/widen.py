"""Grow a trained MSR-net without changing what it computes (a starting point for fine-tuning).

* :func:`widen`: f2's convolutions get more filters (``width`` -> ``new_width``). The new
  filters read every input (small random weights), but everything that reads them - the
  next convolution's new input channels and the 1x1 fusion's new columns - starts at zero,
  so the output is unchanged; training then grows their outgoing weights.
* :func:`deepen`: more f2 layers (``depth`` -> ``new_depth``, appended after the last):
  each new 3x3 convolution is the identity on its input (centre tap 1, bias 0; its input is
  a ReLU output, so the ReLU passes it unchanged) and its 1x1 fusion columns are zero. The
  receptive radius grows by one pixel per layer.
* :func:`add_noise_input`: a linear model's input channels 1 and 2 become the noise level
  (``config.noise_input``; they were copies of channel 0): f1's fusion weights of channels
  1 and 2 are added to channel 0's and theirs set to zero, so on the old input (three
  equal channels) and on the new one alike the output is unchanged; training then learns
  to read the noise level.

Training code (torch): ``python -m msrnet_napari.training.widen IN.pt OUT.pt --width 48``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from typing import Optional

import torch

from .model import CHANNELS, MSRNet, model_from_checkpoint, save_checkpoint


def widen(model: MSRNet, new_width: int, seed: int = 0, scale: float = 0.5) -> MSRNet:
    """A copy of ``model`` with ``new_width`` f2 filters, computing the same function.

    ``scale`` multiplies the He-normal std of the new filters' incoming weights."""
    cfg = model.config
    old = cfg.width
    if new_width < old:
        raise ValueError(f"new width {new_width} is smaller than the model's ({old})")
    wide = MSRNet(replace(cfg, width=new_width))
    gen = torch.Generator().manual_seed(seed)
    src = model.state_dict()
    with torch.no_grad():
        wide.f1.load_state_dict(model.f1.state_dict())
        wide.f3.load_state_dict(model.f3.state_dict())
        for m, conv in enumerate(wide.f2.convs):
            w_old, b_old = src[f"f2.convs.{m}.weight"], src[f"f2.convs.{m}.bias"]
            cin = conv.weight.shape[1]
            std = scale * math.sqrt(2.0 / (cin * 9))
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.01)
            conv.weight[:old, :, :, :] = 0.0  # old filters read only old channels ...
            conv.weight[:old, :w_old.shape[1]] = w_old  # ... with their trained weights
            conv.bias[:old] = b_old
        fuse_old = src["f2.fuse.weight"]  # (3, depth * old, 1, 1)
        wide.f2.fuse.weight.zero_()
        for m in range(cfg.depth):
            wide.f2.fuse.weight[:, m * new_width:m * new_width + old] = \
                fuse_old[:, m * old:(m + 1) * old]
        wide.f2.fuse.bias.copy_(src["f2.fuse.bias"])
    return wide.eval()


def deepen(model: MSRNet, new_depth: int) -> MSRNet:
    """A copy of ``model`` with ``new_depth`` f2 layers (identity layers appended)."""
    cfg = model.config
    if new_depth < cfg.depth:
        raise ValueError(f"new depth {new_depth} is smaller than the model's ({cfg.depth})")
    if cfg.depth < 2 and new_depth > cfg.depth:
        raise ValueError("deepen needs a model with at least 2 f2 layers (width -> width)")
    deep = MSRNet(replace(cfg, depth=new_depth))
    src = model.state_dict()
    w = cfg.width
    with torch.no_grad():
        deep.f1.load_state_dict(model.f1.state_dict())
        deep.f3.load_state_dict(model.f3.state_dict())
        for m, conv in enumerate(deep.f2.convs):
            if m < cfg.depth:
                conv.weight.copy_(src[f"f2.convs.{m}.weight"])
                conv.bias.copy_(src[f"f2.convs.{m}.bias"])
            else:
                conv.weight.zero_()
                conv.bias.zero_()
                for c in range(w):
                    conv.weight[c, c, 1, 1] = 1.0
        deep.f2.fuse.weight.zero_()
        deep.f2.fuse.weight[:, :cfg.depth * w] = src["f2.fuse.weight"]
        deep.f2.fuse.bias.copy_(src["f2.fuse.bias"])
    return deep.eval()


def add_noise_input(model: MSRNet) -> MSRNet:
    """A copy of linear ``model`` with ``noise_input`` (see the module docstring)."""
    cfg = model.config
    if cfg.intensity != "linear":
        raise ValueError("noise_input needs a linear (microscopy) model")
    if cfg.noise_input:
        raise ValueError("the model already has noise_input")
    out = MSRNet(replace(cfg, noise_input=True))
    out.load_state_dict(model.state_dict())
    with torch.no_grad():
        w = out.f1.fuse.weight  # (f1_width, 3 n, 1, 1), scale-major: [M_1(c0, c1, c2), ...]
        for j in range(cfg.n_scales):
            w[:, CHANNELS * j] += w[:, CHANNELS * j + 1] + w[:, CHANNELS * j + 2]
            w[:, CHANNELS * j + 1:CHANNELS * (j + 1)] = 0.0
    return out.eval()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--width", type=int, help="new f2 width")
    p.add_argument("--depth", type=int, help="new f2 depth (K)")
    p.add_argument("--noise-input", action="store_true",
                   help="input channels 1, 2 become the noise level (linear models)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = model_from_checkpoint(args.checkpoint)
    if args.width:
        model = widen(model, args.width, seed=args.seed)
    if args.depth:
        model = deepen(model, args.depth)
    if args.noise_input:
        model = add_noise_input(model)
    save_checkpoint(model, args.out, grown_from=str(args.checkpoint))
    cfg = model.config
    print(f"{args.out}: width {cfg.width}, depth {cfg.depth}, receptive radius "
          f"{cfg.receptive_radius}, {sum(p.numel() for p in model.parameters())} parameters "
          f"({CHANNELS} colour channels)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
