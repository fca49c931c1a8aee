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
* several folders or folder trees of photos (``--images`` repeated): every image
  below them, named ``<folder>/<relative path>``, split by the same sha256 rule
  (``val_count`` images, or 15 %).
* real low-/normal-light pairs (:func:`load_pairs`): a folder with ``low/`` and
  ``high/`` subfolders holding images of the same stems (LOL). A FIXED holdout of
  ``n_val`` pairs (:func:`pair_split`: sha256 order of the stems, salted) is never
  trained on; the split is written to / read from a splits file, so it is
  reproducible and the same for training and evaluation.
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


def list_image_tree(images_dir: str | os.PathLike[str]) -> list[str]:
    """Every image file below ``images_dir`` (recursively), as sorted relative POSIX paths."""
    root = Path(images_dir)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def split_names(names: Sequence[str], n_val: int, salt: str = SPLIT_SALT) -> dict:
    """Deterministic split with exactly ``n_val`` validation names (sha256 order)."""
    order = sorted(names, key=lambda n: hashlib.sha256((salt + n).encode()).hexdigest())
    n_val = max(0, min(int(n_val), len(order) - 1))
    return {"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}


def load_folders(folders: Sequence[str | os.PathLike[str]], val_count: int = 0
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(train, val)`` from several folders / folder trees of photos; names are
    ``<folder name>/<relative path>`` (just the relative path for one folder, so one
    flat folder is split as :func:`load_folder` splits it without a splits file)."""
    paths: dict[str, Path] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist")
        for rel in list_image_tree(folder):
            name = rel if len(folders) == 1 else f"{folder.name}/{rel}"
            if name in paths:
                raise ValueError(f"image name {name!r} occurs twice in {list(map(str, folders))}")
            paths[name] = folder / rel
    if not paths:
        raise ValueError(f"no images in {list(map(str, folders))}")
    split = split_names(list(paths), val_count) if val_count else default_split(list(paths))
    train = {n: read_rgb(paths[n]) for n in split["train"]}
    val = {n: read_rgb(paths[n]) for n in split["val"]}
    return train, val


PAIR_SALT = "msrnet-pairs-v1:"
PAIR_VAL_COUNT = 30


def pair_stems(pairs_dir: str | os.PathLike[str]) -> dict[str, tuple[Path, Path]]:
    """stem -> (low path, high path) for the stems present in both ``low/`` and ``high/``."""
    root = Path(pairs_dir)
    sides = []
    for side in ("low", "high"):
        folder = root / side
        if not folder.is_dir():
            raise FileNotFoundError(f"paired data: {folder} does not exist (need low/ and high/)")
        found: dict[str, Path] = {}
        for name in list_images(folder):
            stem = Path(name).stem
            if stem in found:
                raise ValueError(f"paired data: two {side} images with stem {stem!r}")
            found[stem] = folder / name
        sides.append(found)
    low, high = sides
    unpaired = sorted(set(low) ^ set(high))
    if unpaired:
        raise ValueError(f"paired data: {len(unpaired)} stems lack a partner: {unpaired[:5]}")
    return {s: (low[s], high[s]) for s in sorted(low)}


def pair_split(stems: Sequence[str], n_val: int = PAIR_VAL_COUNT) -> dict:
    """The fixed holdout of paired data: the first ``n_val`` stems in salted sha256 order."""
    return split_names(stems, n_val, PAIR_SALT)


def read_or_make_pair_split(stems: Sequence[str], splits: str | os.PathLike[str] | None,
                            n_val: int = PAIR_VAL_COUNT) -> dict:
    """The split of the pairs: read from ``splits`` if that file exists (checked against
    the stems), else made by :func:`pair_split` and written there (if given)."""
    if splits and Path(splits).is_file():
        with open(splits) as fh:
            split = json.load(fh)
        missing = sorted((set(split["train"]) | set(split["val"])) - set(stems))
        if missing:
            raise FileNotFoundError(f"{len(missing)} stems of {splits} missing: {missing[:5]}")
    else:
        split = pair_split(stems, n_val)
        if splits:
            Path(splits).parent.mkdir(parents=True, exist_ok=True)
            with open(splits, "w") as fh:
                json.dump({"rule": f"sha256({PAIR_SALT!r} + stem), first {n_val} = val",
                           **split}, fh, indent=1)
    overlap = set(split["train"]) & set(split["val"])
    if overlap:
        raise ValueError(f"pairs in both train and val: {sorted(overlap)[:5]}")
    return {"train": list(split["train"]), "val": list(split["val"])}


Pair = tuple  # (low uint8 HxWx3, high uint8 HxWx3)


def load_pairs(pairs_dir: str | os.PathLike[str], splits: str | os.PathLike[str] | None = None,
               n_val: int = PAIR_VAL_COUNT) -> tuple[dict[str, Pair], dict[str, Pair]]:
    """``(train, val)`` dicts stem -> (low, high) uint8 arrays of real pairs (same size)."""
    paths = pair_stems(pairs_dir)
    split = read_or_make_pair_split(list(paths), splits, n_val)
    out = []
    for part in ("train", "val"):
        d = {}
        for stem in split[part]:
            low, high = (read_rgb(p) for p in paths[stem])
            if low.shape != high.shape:
                raise ValueError(f"pair {stem!r}: low {low.shape} and high {high.shape} differ")
            d[stem] = (low, high)
        out.append(d)
    return out[0], out[1]


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


def load_dataset(*, images: str | Sequence[str] | None = None, splits: str | None = None,
                 pack: str | None = None, val_count: int = 0
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Photos: a pack, one folder (+ splits.json) or several folders / trees."""
    if pack:
        return load_pack(pack)
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if images:
        if len(images) == 1 and splits:
            return load_folder(images[0], splits)
        if splits:
            raise ValueError("--splits applies to one images folder")
        if len(images) == 1 and not val_count and not any(Path(images[0]).glob("*/")):
            return load_folder(images[0])
        return load_folders(images, val_count)
    raise ValueError("give either a pack (.npz) or an images folder")


class PairSampler:
    """Random aligned crops of real (low, high) pairs as two ``NCHW`` float tensors in
    [0, 1], with the same dihedral transform, and each crop's exposure gain: the gain
    of its WHOLE low image (``gains``, computed once as enhance() would)."""

    def __init__(self, pairs: Sequence[Pair], gains: Sequence[float], crop: int,
                 device="cpu", seed: int = 0):
        import torch

        lows = [np.asarray(lo)[..., :3] for lo, _ in pairs]
        highs = [np.asarray(hi)[..., :3] for _, hi in pairs]
        self.low = CropSampler(lows, crop, device=device, seed=seed)
        self.high = CropSampler(highs, crop, device=device, seed=seed)
        self.gains = torch.tensor([float(g) for g in gains], dtype=torch.float32,
                                  device=self.low.device)
        if len(self.gains) != len(lows):
            raise ValueError("one gain per pair")

    def sample(self, batch: int):
        """(low, high, gain N x 1 x 1 x 1) - the two samplers share their random stream."""
        state = self.low.rng.bit_generator.state
        idx = self.low.rng.choice(len(self.low.images), size=batch, p=self.low.probs)
        self.low.rng.bit_generator.state = state
        self.high.rng.bit_generator.state = state
        low = self.low.sample(batch)
        high = self.high.sample(batch)
        gain = self.gains[self.low.torch.from_numpy(idx).to(self.gains.device)]
        return low, high, gain.view(-1, 1, 1, 1)


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
