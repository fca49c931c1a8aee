"""Training data for MSR-net: image loading, splits, pack files, random crops.

The whole data set is small (tens of photographs, long side <= 1024), so it is
loaded into memory once - on the GPU when training there - and every batch is
cut from it with random crops, dihedral flips/rotations and the synthetic
low-light model of :mod:`msrnet_napari.training.degrade`.

Sources:

* ``images_dir`` + ``splits.json`` (``{"train": [names], "val": [names]}``),
  written by ``scripts/get_training_images.sh``; without a splits file the
  same deterministic rule is applied (sha256 order of the names, first 15 %
  are validation).
* a pack ``.npz`` (``scripts/make_data_pack.py``): ``train_names``,
  ``val_names`` and uint8 ``HxWx3`` arrays ``train_<i>`` / ``val_<i>``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
SPLIT_SALT = "msrnet-split-v1:"
VAL_FRACTION = 0.15


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 ``HxWx3`` (gray replicated, alpha dropped)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I", "F"):
            a = np.asarray(im, dtype=np.float64)
            a = np.clip(a / max(a.max(), 1.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return np.repeat(a[..., None], 3, axis=2)
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def default_split(names: Sequence[str], val_fraction: float = VAL_FRACTION) -> dict:
    """Deterministic whole-image split used when no splits.json is given."""
    order = sorted(names, key=lambda n: hashlib.sha256((SPLIT_SALT + n).encode()).hexdigest())
    n_val = round(val_fraction * len(order)) if len(order) > 1 else 0
    n_val = max(1, n_val) if len(order) > 1 else 0
    return {"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}


def list_images(images_dir: str | os.PathLike[str]) -> list[str]:
    return sorted(p.name for p in Path(images_dir).iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def load_folder(images_dir: str | os.PathLike[str], splits: str | os.PathLike[str] | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return ``(train, val)`` dicts name -> uint8 HxWx3 from a folder (+ splits.json)."""
    images_dir = Path(images_dir)
    if splits:
        with open(splits) as fh:
            split = json.load(fh)
        missing = [n for n in split["train"] + split["val"] if not (images_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} split images missing in {images_dir}: "
                                    f"{missing[:5]}")
    else:
        split = default_split(list_images(images_dir))
    overlap = set(split["train"]) & set(split["val"])
    if overlap:
        raise ValueError(f"images in both train and val: {sorted(overlap)[:5]}")
    train = {n: read_rgb(images_dir / n) for n in split["train"]}
    val = {n: read_rgb(images_dir / n) for n in split["val"]}
    if not train:
        raise ValueError(f"no training images in {images_dir}")
    return train, val


def save_pack(path: str | os.PathLike[str], train: dict[str, np.ndarray],
              val: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "train_names": np.array(list(train), dtype=str),
        "val_names": np.array(list(val), dtype=str),
    }
    for prefix, d in (("train", train), ("val", val)):
        for i, img in enumerate(d.values()):
            arrays[f"{prefix}_{i}"] = np.ascontiguousarray(img, dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_pack(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        out = []
        for prefix in ("train", "val"):
            names = [str(n) for n in z[f"{prefix}_names"]]
            out.append({n: z[f"{prefix}_{i}"] for i, n in enumerate(names)})
    if not out[0]:
        raise ValueError(f"no training images in pack {path}")
    return out[0], out[1]


def load_dataset(*, images: str | None = None, splits: str | None = None,
                 pack: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    if pack:
        return load_pack(pack)
    if images:
        return load_folder(images, splits)
    raise ValueError("give either a pack (.npz) or an images folder")


class CropSampler:
    """Random (bright) training crops as ``NCHW`` float tensors in [0, 1].

    Images are held once as uint8 tensors on ``device``; a crop's source image
    is drawn with probability proportional to its number of possible crop
    positions (roughly its area), the position uniformly, then one of the 8
    dihedral transforms (flips / 90-degree rotation) is applied.
    """

    def __init__(self, images: Sequence[np.ndarray], crop: int, device="cpu", seed: int = 0):
        import torch

        self.torch = torch
        self.crop = int(crop)
        self.device = torch.device(device)
        imgs = []
        for a in images:
            a = np.asarray(a)
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=2)
            h, w = a.shape[:2]
            if h < crop or w < crop:  # tiny image: pad by reflection up to one crop
                a = np.pad(a, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)),
                           mode="reflect" if min(h, w) > 1 else "edge")
            imgs.append(torch.from_numpy(np.array(a[..., :3], dtype=np.uint8, order="C")).permute(2, 0, 1)
                        .contiguous().to(self.device))
        if not imgs:
            raise ValueError("no images")
        self.images = imgs
        counts = np.array([(t.shape[1] - crop + 1) * (t.shape[2] - crop + 1) for t in imgs],
                          dtype=np.float64)
        self.probs = counts / counts.sum()
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int, context: int = 0):
        """``batch`` crops (N x 3 x crop x crop); with ``context`` > 0 also
        ``(crops, ctx)``: ctx holds about ``context`` pixels drawn at random from
        each crop's whole source image (N x 3 x crop x ceil(context / crop)), e.g. to darken them with
        the crop's parameters and estimate the whole image's exposure."""
        torch, c = self.torch, self.crop
        idx = self.rng.choice(len(self.images), size=batch, p=self.probs)
        crops, ctx = [], []
        cols = -(-int(context) // c) if context > 0 else 0
        for i in idx:
            img = self.images[i]
            y = int(self.rng.integers(0, img.shape[1] - c + 1))
            x = int(self.rng.integers(0, img.shape[2] - c + 1))
            crops.append(img[:, y:y + c, x:x + c])
            if cols:
                flat = img.reshape(3, -1)
                pick = torch.from_numpy(self.rng.integers(0, flat.shape[1], c * cols)).to(self.device)
                ctx.append(flat[:, pick].reshape(3, c, cols))
        out = torch.stack(crops).float().div_(255.0)
        flips = self.rng.random((3, batch)) < 0.5
        for k, dims in enumerate(((3,), (2,), None)):
            mask = torch.from_numpy(flips[k]).to(self.device).view(-1, 1, 1, 1)
            if not bool(flips[k].any()):
                continue
            alt = out.transpose(2, 3) if dims is None else out.flip(dims)
            out = torch.where(mask, alt, out)
        if cols:
            return out.contiguous(), torch.stack(ctx).float().div_(255.0)
        return out.contiguous()
