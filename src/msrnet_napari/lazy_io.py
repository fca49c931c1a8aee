"""Big data: OME-Zarr images and large TIFF stacks, enhanced lazily into an OME-Zarr store.

    image = open_lazy("big.ome.zarr")            # or a TIFF: tifffile aszarr() -> dask
    summary = enhance_to_zarr(image, "out/big_msrnet.ome.zarr", client=None)

Nothing is loaded whole. The input is a dask array (level 0 of the NGFF
multiscale image, or the TIFF's first series through ``tifffile.aszarr``); the
intensity mapping is decided ONCE for the whole array
(:func:`msrnet_napari.scaling_for`: strided subsample / block statistics); the
result is computed block by block by ``enhance(dask_array, scaling=decision)``
(``map_overlap`` with a halo of the network's receptive radius, wider where the
decision bins photon-starved channels: :func:`msrnet_napari.binning.halo`) and each block
is written into the output store by the task that computed it, so a worker
never holds more than a block or two, whatever the size of the array.

Output: an OME-Zarr image (NGFF 0.4 on zarr v2; NGFF 0.5 on zarr v3 when the
input is one), same shape and dtype as the input in NGFF axis order
(t, c, z, y, x: an RGB or YXS TIFF gets its samples as the ``c`` axis), chunks
aligned with the input's chunks in Y/X, the input's NGFF metadata (axes,
level-0 scale/translation, ``omero``) and an ``msrnet`` attribute that records
the model, the decision (``describe()``) and the settings. Only level 0 is
written (no pyramid).

Safe and resumable writes. The store is built under a hidden name beside the
target (``.NAME.partial``) and renamed to ``NAME`` when every block is in, so
``NAME`` existing means complete. A work block (a whole number of output
chunks, never shared by two blocks) is written by one task, which then writes
its "done" marker (one empty file per block, ``.msrnet_done/<i.j.k>``, written
atomically after the data). ``resume=True`` continues an interrupted run:
blocks with a marker are skipped and not recomputed; any other block is simply
computed and written again - the engine is deterministic and chunk files are
replaced atomically (zarr), so a block written twice has identical bytes and a
half-written chunk cannot survive (the temporary files of writes a kill cut
short are deleted when the run is resumed). A resume must use the same input, model and
settings (a run key records them; a different one is refused).

Schedulers: ``client=None`` runs on a local thread pool; a
``distributed.Client`` (an address, or a ``LocalCluster``) runs every block on
its workers, which then need this package and access to the input and output
paths (a shared file system). Progress is reported per finished block through
``progress(done, total)`` in the calling process.

No torch, no napari; dask, zarr (and tifffile for TIFF) are imported on use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .binning import halo

__all__ = [
    "LazyImage", "LazyIOError", "RunSummary", "ZARR_SUFFIXES",
    "enhance_to_zarr", "is_zarr_path", "open_lazy", "open_ome_zarr", "open_tiff",
    "output_name", "partial_path",
]

ZARR_SUFFIXES = (".zarr",)
BLOCK_PIXELS = 1 << 22  # default work block: about this many pixels (a 2048 x 2048 plane)
MAX_BLOCKS = 1 << 22  # more work blocks than this is a hostile or mistaken input
BATCH_BLOCKS = 4096  # blocks handed to the scheduler at once (bounds the graph)
MARKERS = ".msrnet_done"
NGFF_RANK = {"time": 0, "channel": 1, "space": 2}  # y, x are the last two space axes
_TIFF_AXES = {"T": ("t", "time"), "Z": ("z", "space"), "C": ("c", "channel"),
              "S": ("c", "channel"), "Y": ("y", "space"), "X": ("x", "space")}


class LazyIOError(ValueError):
    """The input cannot be read lazily, or the output store cannot be written."""


def _require(module: str):
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is needed for OME-Zarr / lazy TIFF processing; install "
                          f"it with: pip install 'msrnet-napari[dask,io]'") from exc
    if module == "zarr" and int(str(mod.__version__).split(".")[0]) < 3:
        raise ImportError(f"zarr {mod.__version__} is too old: OME-Zarr / lazy TIFF processing "
                          "needs zarr >= 3 (Python >= 3.11): pip install 'zarr>=3'")
    return mod


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class LazyImage:
    """An input array, lazily, with what the output store needs to know about it.

    ``data`` is the dask array in the source's own axis order (for a TIFF the
    series as tifffile reads it). ``enhance_input()`` is the array handed to
    ``enhance`` (RGB: samples last, else NGFF order), ``to_output()`` turns the
    enhanced array into the output's NGFF axis order ``axes``.
    """

    source: Path
    kind: str  # "ome-zarr" or "tiff"
    data: Any
    axes: tuple  # NGFF axes (dicts with name/type[/unit]) of the OUTPUT array
    rgb: bool
    chunks: tuple  # storage chunk shape of ``data``
    work_order: tuple  # enhance input = data.transpose(work_order)
    out_order: tuple  # output = enhanced.transpose(out_order)
    zarr_format: int = 2
    ngff_version: str = "0.4"
    name: str = ""
    transforms: tuple = ()  # level-0 coordinateTransformations (scale, translation)
    top_transforms: tuple = ()  # multiscale-level coordinateTransformations
    omero: Optional[dict] = None
    invert: bool = False  # min-is-white TIFF: stored as max - value

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape[i] for i in self._out_axes())

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def channel_axis(self) -> Optional[int]:
        """The ``c`` axis of the enhance input (None for RGB data and for no channels)."""
        if self.rgb:
            return None
        types = [a.get("type") for a in self.axes]
        return types.index("channel") if "channel" in types else None

    def _out_axes(self) -> list:
        return [self.work_order[i] for i in self.out_order]

    def enhance_input(self):
        data = self.data.transpose(self.work_order)
        if self.invert:
            top = np.iinfo(self.dtype).max
            data = data.map_blocks(lambda b: np.subtract(top, b, dtype=b.dtype), dtype=self.dtype)
        return data

    def to_output(self, enhanced):
        return enhanced.transpose(self.out_order)

    def output_chunks(self) -> tuple:
        """Chunk shape of the output array: the input's, in output order; in Y/X
        capped at 2048 (then 1024); below 64 grown to a whole multiple of at least 256."""
        native = [self.chunks[i] for i in self._out_axes()]
        shape = self.shape
        out = []
        for ax, (c, n) in enumerate(zip(native, shape)):
            if ax >= len(shape) - 2:
                if c > 2048:
                    c = 1024
                elif c < 64:  # e.g. TIFF strips of a few rows
                    c *= -(-256 // c)
            out.append(max(1, min(int(c), int(n))))
        return tuple(out)


def is_zarr_path(path: Path) -> bool:
    """A folder that is a zarr store (named *.zarr, or with zarr metadata in it)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return path.name.lower().endswith(ZARR_SUFFIXES) or any(
        (path / f).is_file() for f in (".zgroup", ".zattrs", ".zarray", "zarr.json"))


def open_lazy(path: Any) -> LazyImage:
    """An OME-Zarr folder or a TIFF file, as a :class:`LazyImage` (nothing is read but metadata)."""
    path = Path(path)
    if path.is_dir():
        return open_ome_zarr(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return open_tiff(path)
    raise LazyIOError(f"{path}: not an OME-Zarr folder or a TIFF file")


def _axis_dicts(raw: Any, ndim: int) -> tuple:
    """NGFF axes as dicts (0.4+: dicts; 0.3: names; 0.1/0.2: implied t, c, z, y, x)."""
    if raw is None:
        if ndim != 5:
            raise LazyIOError(f"NGFF metadata without axes needs 5-D (t, c, z, y, x) data, "
                              f"got {ndim}-D")
        raw = ["t", "c", "z", "y", "x"]
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    axes = []
    for a in raw:
        if isinstance(a, str):
            a = {"name": a}
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise LazyIOError(f"NGFF axes must be names or objects with a name, got {str(a)[:60]}")
        a = dict(a)
        if "type" not in a and a["name"].lower() in kinds:
            a["type"] = kinds[a["name"].lower()]
        axes.append(a)
    if len(axes) != ndim:
        raise LazyIOError(f"NGFF metadata names {len(axes)} axes for {ndim}-D data")
    return tuple(axes)


def _check_axes(axes: Sequence[dict]) -> None:
    types = [a.get("type") for a in axes]
    if len(axes) < 2 or types[-1] != "space" or types[-2] != "space":
        raise LazyIOError(f"the last two axes must be space axes (y, x), got "
                          f"{[a['name'] for a in axes]}")
    if types.count("channel") > 1 or types.count("time") > 1:
        raise LazyIOError(f"at most one channel and one time axis, got "
                          f"{[a['name'] for a in axes]}")


def open_ome_zarr(path: Any) -> LazyImage:
    """Level 0 of the multiscale image in an OME-Zarr folder (NGFF 0.1-0.5; a
    bioformats2raw layout opens its first image); channel axis from the axes."""
    zarr = _require("zarr")
    da = _require("dask.array")
    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise LazyIOError(f"{path}: not a zarr group ({_clip(exc)})") from exc
    attrs = dict(group.attrs)
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
    prefix = ""
    if "multiscales" not in ome and "bioformats2raw.layout" in ome:
        prefix = "0/"
        sub = zarr.open_group(str(path / "0"), mode="r")
        attrs = dict(sub.attrs)
        ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
    scales = ome.get("multiscales")
    if not isinstance(scales, list) or not scales or not isinstance(scales[0], dict):
        raise LazyIOError(f"{path}: no NGFF 'multiscales' metadata (not an OME-Zarr image)")
    ms = scales[0]
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict) \
            or not isinstance(datasets[0].get("path"), str):
        raise LazyIOError(f"{path}: NGFF multiscales has no datasets")
    level0 = datasets[0]["path"]
    if level0.startswith("/") or ".." in level0.split("/"):
        raise LazyIOError(f"{path}: dataset path {level0[:60]!r} leaves the store")
    try:
        array = zarr.open_array(str(path / (prefix + level0)), mode="r")
    except Exception as exc:
        raise LazyIOError(f"{path}: cannot open level 0 ({level0}): {_clip(exc)}") from exc
    from .normalize import check_dtype

    check_dtype(np.dtype(array.dtype))
    axes = _axis_dicts(ms.get("axes"), array.ndim)
    _check_axes(axes)
    zarr_format = int(getattr(array.metadata, "zarr_format", 2))
    data = da.from_zarr(array)
    ident = tuple(range(array.ndim))
    return LazyImage(
        source=path, kind="ome-zarr", data=data, axes=axes, rgb=False,
        chunks=tuple(int(c) for c in array.chunks), work_order=ident, out_order=ident,
        zarr_format=zarr_format, ngff_version="0.5" if zarr_format == 3 else "0.4",
        name=str(ms.get("name") or path.name.split(".")[0]),
        transforms=tuple(datasets[0].get("coordinateTransformations") or ()),
        top_transforms=tuple(ms.get("coordinateTransformations") or ()),
        omero=ome.get("omero") if isinstance(ome.get("omero"), dict) else None)


class _TiffArray:
    """Picklable array view of a TIFF series for ``dask.array.from_array``: each
    process opens the file itself (once, on first read) through ``tifffile.aszarr``,
    so the graph holds only the path and workers elsewhere read their own chunks.
    Threads share the handle (tifffile locks its seeks and reads); it is closed when
    this object is collected."""

    def __init__(self, path: str, shape: tuple, dtype: np.dtype, chunks: tuple) -> None:
        self.path, self.shape, self.dtype, self.chunks = path, shape, np.dtype(dtype), chunks
        self.ndim = len(shape)
        self._lock, self._array = threading.Lock(), None

    def __getstate__(self):
        return {k: self.__dict__[k] for k in ("path", "shape", "dtype", "chunks", "ndim")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock, self._array = threading.Lock(), None

    def _zarr(self):
        with self._lock:
            if self._array is None:
                import weakref

                import tifffile
                import zarr

                tif = tifffile.TiffFile(self.path)
                try:
                    self._array = zarr.open(tif.series[0].aszarr(), mode="r")
                except BaseException:
                    tif.close()
                    raise
                weakref.finalize(self, tif.close)
            return self._array

    def __getitem__(self, key):
        block = np.asarray(self._zarr()[key])
        if block.dtype != self.dtype:  # big-endian files: native byte order
            block = block.astype(self.dtype)
        return block


def open_tiff(path: Any) -> LazyImage:
    """The first series of a TIFF (all its pages), lazily through ``tifffile.aszarr``.

    Axes from the file (ImageJ / OME / shaped metadata: T, Z, C, S, Y, X; a generic
    page axis becomes ``z``, or ``t`` when there is a Z). RGB(A) data is enhanced as
    colour and written with its samples as the ``c`` axis. Palette and gray+alpha
    TIFFs are refused (read them eagerly); min-is-white is stored inverted, as the
    eager reader does.
    """
    tifffile = _require("tifffile")
    _require("zarr")
    if tuple(int(v) for v in tifffile.__version__.split(".")[:3] if v.isdigit()) < (2025, 5, 21):
        raise ImportError(f"tifffile {tifffile.__version__} cannot read TIFF as zarr 3; lazy "
                          "TIFF reading needs tifffile >= 2025.5.21: pip install -U tifffile")
    da = _require("dask.array")
    path = Path(path)
    from .image_files import _open_regular  # refuses FIFOs, devices, folders

    with _open_regular(path) as fh:
        try:
            tif = tifffile.TiffFile(fh, name=path.name)
        except Exception as exc:
            raise LazyIOError(f"{path}: cannot read TIFF file: {_clip(exc)}") from exc
        with tif:
            if not tif.series:
                raise LazyIOError(f"{path}: TIFF file has no images")
            series = tif.series[0]
            n_pages = len(tif.pages)
            if len(tif.series) > 1 or len(series.pages) != n_pages:
                raise LazyIOError(f"{path}: TIFF pages differ (several image series); only "
                                  "uniform stacks are supported")
            key = series.keyframe
            photometric = int(key.photometric)
            if photometric not in (0, 1, 2):
                raise LazyIOError(f"{path}: unsupported TIFF photometric interpretation "
                                  f"{getattr(key.photometric, 'name', photometric)}")
            extras = tuple(int(e) for e in (key.extrasamples or ()))
            samples = int(key.samplesperpixel)
            if photometric in (0, 1) and samples == 2 and len(extras) == 1:
                raise LazyIOError(f"{path}: gray+alpha TIFF is not supported lazily; "
                                  "read it without --lazy")
            letters = series.axes.upper()
            shape = tuple(int(s) for s in series.shape)
            dtype = np.dtype(series.dtype).newbyteorder("=")
            store = series.aszarr()
            try:
                import zarr

                chunks = tuple(int(c) for c in zarr.open(store, mode="r").chunks)
            finally:
                store.close()
    from .normalize import check_dtype

    check_dtype(dtype)
    if photometric == 0 and dtype.kind != "u":
        raise LazyIOError(f"{path}: min-is-white TIFF is supported for unsigned integers only")
    rgb = photometric == 2 and samples in (3, 4) and "S" in letters
    names, generic = [], [c for c in letters if c not in _TIFF_AXES]
    for c in letters:
        if c in _TIFF_AXES:
            names.append(_TIFF_AXES[c])
        elif "Z" not in letters and len(generic) == 1:
            names.append(("z", "space"))
        elif "T" not in letters and len(generic) == 1:
            names.append(("t", "time"))
        else:
            raise LazyIOError(f"{path}: TIFF axes {letters} have no OME-Zarr equivalent")
    if [n for n, _ in names].count("c") > 1 or len(set(n for n, _ in names)) != len(names):
        raise LazyIOError(f"{path}: TIFF axes {letters} have no OME-Zarr equivalent")
    if len(names) > 5 or not (letters.endswith("YX") or letters.endswith("YXS")):
        raise LazyIOError(f"{path}: TIFF axes {letters}: need ... Y, X (and at most t, c, z)")
    nd = len(letters)
    if rgb:  # enhance with samples last (planar RGB moved), then NGFF order
        s = letters.index("S")
        work_order = tuple([i for i in range(nd) if i != s] + [s])
    else:  # enhance in NGFF order
        work_order = tuple(sorted(range(nd), key=lambda i: (NGFF_RANK[names[i][1]], i)))
    work_names = [names[i] for i in work_order]
    out_order = tuple(sorted(range(nd), key=lambda i: (NGFF_RANK[work_names[i][1]], i)))
    out_axes = tuple({"name": work_names[i][0], "type": work_names[i][1]} for i in out_order)
    _check_axes(out_axes)
    array = _TiffArray(str(path.resolve()), shape, dtype, chunks)
    data = da.from_array(array, chunks=chunks, asarray=False, fancy=False,
                         name=f"tiff-{_token(str(path.resolve()), os.stat(path).st_mtime_ns)}")
    return LazyImage(
        source=path, kind="tiff", data=data, axes=out_axes, rgb=rgb, chunks=chunks,
        work_order=work_order, out_order=out_order,
        name=path.name.split(".")[0], invert=photometric == 0)


# --------------------------------------------------------------------------- output names

def output_name(source: Path, suffix: str = "_msrnet") -> str:
    """``<stem><suffix>.ome.zarr`` (``x.ome.zarr``, ``x.zarr``, ``x.ome.tif`` -> ``x``)."""
    name = Path(source).name
    lower = name.lower()
    for ext in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if lower.endswith(ext) and len(name) > len(ext):
            name = name[:-len(ext)]
            break
    return f"{name}{suffix}.ome.zarr"


def partial_path(target: Path) -> Path:
    """Where an unfinished output is built (renamed to ``target`` when complete)."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial")


# --------------------------------------------------------------------------- the run

@dataclass
class RunSummary:
    target: Path
    blocks: int  # work blocks in all
    skipped: int  # found done (resume)
    written: int  # computed and written by this run
    decision: Any = None
    complete: bool = False
    notes: list = field(default_factory=list)


def _clip(exc: Any, limit: int = 300) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _token(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=10).hexdigest()


def _work_chunks(shape, out_chunks, spatial, radius, block, extent) -> tuple:
    """Dask chunks of the work blocks: whole multiples of the output chunks (never
    two blocks in one chunk), about ``block`` pixels along Y and X; a last block
    thinner than the halo (map_overlap would rechunk it) or than a quarter block
    joins the one before."""
    chunks = []
    for ax, (n, c) in enumerate(zip(shape, out_chunks)):
        if ax not in spatial:
            b = c
        else:
            edge = block if block else max(c, int(math.sqrt(BLOCK_PIXELS / max(1, extent))))
            b = c * max(1, edge // c)
        sizes = [b] * (n // b) + ([n % b] if n % b else [])
        if len(sizes) > 1 and ax in spatial and sizes[-1] <= max(radius, b // 4):
            sizes[-2:] = [sizes[-2] + sizes[-1]]
        chunks.append(tuple(sizes))
    return tuple(chunks)


def _check_aligned(chunks, out_chunks) -> None:
    for sizes, c in zip(chunks, out_chunks):
        edges = np.cumsum(sizes)[:-1]
        if np.any(edges % c):
            raise RuntimeError(f"internal error: work blocks {sizes} are not aligned with the "
                               f"store's chunks ({c}); refusing to write")


def _block_name(index: Sequence[int]) -> str:
    return ".".join(str(int(i)) for i in index)


def _write_block(block: np.ndarray, array_path: str, region: tuple, marker: str) -> int:
    """Worker side: write one block's data, then its done marker (atomically)."""
    import zarr

    out = zarr.open_array(array_path, mode="r+")
    out[tuple(slice(a, b) for a, b in region)] = block
    tmp = f"{marker}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(region))
    os.replace(tmp, marker)
    return 1


def _ngff_attrs(image: LazyImage, name: str) -> dict:
    ms: dict = {"version": image.ngff_version, "name": name, "axes": list(image.axes),
                "datasets": [{"path": "0"}]}
    if image.transforms:
        ms["datasets"][0]["coordinateTransformations"] = list(image.transforms)
    else:
        ms["datasets"][0]["coordinateTransformations"] = [
            {"type": "scale", "scale": [1.0] * len(image.axes)}]
    if image.top_transforms:
        ms["coordinateTransformations"] = list(image.top_transforms)
    if image.ngff_version == "0.5":
        del ms["version"]
        ome: dict = {"version": "0.5", "multiscales": [ms]}
        if image.omero:
            ome["omero"] = image.omero
        return {"ome": ome}
    attrs: dict = {"multiscales": [ms]}
    if image.omero:
        attrs["omero"] = image.omero
    return attrs


def _is_our_store(path: Path) -> bool:
    """True for a zarr folder that an earlier run of this module wrote."""
    for meta in (".zattrs", "zarr.json"):
        try:
            with open(path / meta) as fh:
                attrs = json.load(fh)
        except (OSError, ValueError):
            continue
        attrs = attrs.get("attributes", attrs) if meta == "zarr.json" else attrs
        if isinstance(attrs, dict) and isinstance(attrs.get("msrnet"), dict):
            return True
    return False


def _read_msrnet(path: Path) -> Optional[dict]:
    zarr = _require("zarr")
    try:
        info = dict(zarr.open_group(str(path), mode="r").attrs).get("msrnet")
    except Exception:
        return None
    return info if isinstance(info, dict) else None


_INTERRUPTED_WRITE = re.compile(r"\.[0-9a-f]{32}\.(partial|tmp)$")


def _remove_interrupted_writes(work_dir: Path) -> int:
    """Delete the temporary files of writes a killed run left half done.

    zarr's local store writes a chunk to ``NAME.<uuid>.partial`` and renames it
    over ``NAME``; our markers go through ``MARKER.<uuid>.tmp`` the same way. A
    run killed between the two leaves the temporary file behind: it holds no
    data of the result (the chunk itself is rewritten with its block, which has
    no marker), but it would be published inside the output. Returns how many
    were removed."""
    removed = 0
    for path in work_dir.rglob("*"):
        if _INTERRUPTED_WRITE.search(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _remove_tree(path: Path) -> None:
    """Remove an earlier output of ours (renamed away first, so a crash leaves no half tree)."""
    if not _is_our_store(path):
        raise LazyIOError(f"{path} exists and is not an output of msrnet-enhance; not removing it")
    trash = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def enhance_to_zarr(
    image: LazyImage,
    target: Any,
    *,
    model: Optional[str] = None,
    weights: Any = None,
    bit_depth: Optional[int] = None,
    offset: Any = None,
    gain: Optional[float] = None,
    binning: Any = None,
    tile: Optional[int] = None,
    threads: int = 0,
    device: str = "auto",
    precision: str = "fp32",
    block: Optional[int] = None,
    resume: bool = False,
    overwrite: bool = False,
    client: Any = None,
    local_workers: Optional[int] = None,
    progress: Optional[Callable[[int, int], Any]] = None,
    cancel: Any = None,
    on_decision: Optional[Callable[[Any], Any]] = None,
) -> RunSummary:
    """Enhance ``image`` into the OME-Zarr store ``target``, block by block.

    ``model``/``weights``/``bit_depth``/``offset``/``gain``/``binning``/``tile``/``threads``/
    ``device``/``precision`` are those of :func:`msrnet_napari.enhance`. ``block``: work block edge in pixels
    along Y and X (rounded to whole output chunks; default about 2048 x 2048 pixels
    per block). ``resume``: continue an interrupted run (done blocks are skipped);
    ``overwrite``: replace an existing output (it stays until the new one is
    complete). ``client``: a ``distributed.Client`` (None: a local pool of
    ``local_workers`` threads). ``progress(done, total)`` is called after each
    finished block (``done`` counts skipped blocks too); ``cancel.is_set()`` stops
    the run after the blocks in flight (then ``msrnet_napari.Cancelled``).
    ``on_decision(decision)`` is called once the intensity decision is made.
    """
    _require("dask.array")
    dask = _require("dask")
    zarr = _require("zarr")
    import importlib

    from . import __version__
    from .models import resolve_model

    enhance_module = importlib.import_module(".enhance", __package__)  # the module, not the function

    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    target = Path(target)
    work_dir = partial_path(target)
    source = image.source.resolve()
    for out in (target, work_dir):
        real = out.resolve()
        if real == source or source in real.parents or real in source.parents:
            raise LazyIOError(f"output {target} would overwrite (or lie inside) the input "
                              f"{image.source}; choose another output folder")
    if overwrite and target.exists() and not _is_our_store(target):
        raise LazyIOError(f"{target} exists and is not an output of msrnet-enhance; not "
                          "replacing it")
    if block is not None and (isinstance(block, bool) or not isinstance(block, (int, np.integer))
                              or not 1 <= block <= 1 << 20):
        raise ValueError(f"block must be a number of pixels in 1..{1 << 20}, got {block!r}")
    cpu = os.cpu_count() or 1
    if client is None:
        local_workers = max(1, min(cpu, 4) if local_workers is None else int(local_workers))
        if threads == 0:
            threads = max(1, cpu // local_workers)

    x = image.enhance_input()
    options = dict(rgb=image.rgb, channel_axis=image.channel_axis,
                   bit_depth=bit_depth, offset=offset, gain=gain, binning=binning)
    with dask.config.set(scheduler=client if client is not None else "threads"):
        decision = enhance_module.scaling_for(x, model=model, weights=weights, **options)
    if on_decision is not None:
        on_decision(decision)
    _, checkpoint = resolve_model(None if decision.model == "checkpoint" else decision.model,
                                  weights, dtype=x.dtype, rgb=decision.rgb)
    # the context a block needs: the receptive radius, widened by the decision's binning
    radius = halo(decision.max_binning, checkpoint.config.receptive_radius)

    out_shape = image.shape
    out_chunks = image.output_chunks()
    nd = len(out_shape)
    spatial = (nd - 2, nd - 1)
    extent = int(np.prod([c for i, c in enumerate(out_chunks) if i not in spatial]))
    if decision.linear is not None and image.channel_axis is not None:
        extent = extent // out_chunks[image.channel_axis] * out_shape[image.channel_axis]
    wchunks = _work_chunks(out_shape, out_chunks, spatial, radius, block, extent)
    n_blocks = int(np.prod([len(c) for c in wchunks]))
    if n_blocks > MAX_BLOCKS:
        raise LazyIOError(f"{n_blocks} work blocks (shape {out_shape}): more than "
                          f"{MAX_BLOCKS}; use a larger block")
    # work chunks in the enhance input's axis order (the inverse of out_order)
    inverse = np.argsort(image.out_order)
    x = x.rechunk(tuple(wchunks[int(i)] for i in inverse))
    result = image.to_output(enhance_module.enhance(
        x, weights=checkpoint, scaling=decision, tile=tile, threads=threads, device=device,
        precision=precision))
    if result.chunks != wchunks:  # enhance() keeps whole RGB / channel axes in a block
        if any(r != w and len(r) > 1 for r, w in zip(result.chunks, wchunks)):
            result = result.rechunk(wchunks)
    _check_aligned(result.chunks, out_chunks)
    n_blocks = int(np.prod(result.numblocks))
    if result.shape != out_shape or np.dtype(result.dtype) != decision.out_dtype:
        raise RuntimeError("internal error: enhanced array does not match the output")

    settings = {"tile": tile, "device": device, "precision": precision, "block": [c[0] for c in result.chunks],
                "chunks": list(out_chunks), "zarr_format": image.zarr_format}
    run_key = _token(__version__, str(source), tuple(image.data.shape), str(image.dtype),
                     out_shape, repr(decision), enhance_module._fingerprint(checkpoint),
                     json.dumps(settings, sort_keys=True), result.chunks)
    info = {"version": __version__, "source": str(image.source), "model": decision.model,
            "weights": str(checkpoint.source), "decision": decision.describe(),
            "settings": settings, "run_key": run_key, "complete": False}
    summary = RunSummary(target, n_blocks, 0, 0, decision)

    # ---- where to write: a fresh store, or the one a resumed run left
    if target.exists() or target.is_symlink():
        if not (overwrite or resume):
            raise LazyIOError(f"output {target} exists (use --overwrite to replace it or "
                              "--resume to continue a run)")
        if resume:
            old = _read_msrnet(target)
            if old is None or old.get("run_key") != run_key:
                raise LazyIOError(f"output {target} exists and was made with other input or "
                                  "settings; use --overwrite to replace it")
            summary.skipped, summary.complete = n_blocks, True
            summary.notes.append("already complete")
            if progress is not None:
                progress(n_blocks, n_blocks)
            return summary
    if work_dir.exists():
        old = _read_msrnet(work_dir) if _is_our_store(work_dir) else None
        if old is None:
            raise LazyIOError(f"{work_dir} exists and is not an unfinished output of "
                              "msrnet-enhance; remove it")
        if overwrite:
            _remove_tree(work_dir)
        elif not resume:
            raise LazyIOError(f"an interrupted run left {work_dir}: use --resume to continue "
                              "it or --overwrite to start over")
        elif old.get("run_key") != run_key:
            raise LazyIOError(f"the interrupted run in {work_dir} used other input or settings "
                              f"({old.get('decision')}); use --overwrite to start over")
    if not work_dir.exists():
        _create_store(zarr, image, work_dir, out_shape, out_chunks, decision.out_dtype, info)
    markers = work_dir / MARKERS
    markers.mkdir(exist_ok=True)
    if resume and (n_stale := _remove_interrupted_writes(work_dir)):
        summary.notes.append(f"removed {n_stale} temporary file(s) of interrupted writes")
    done = {p.name for p in markers.iterdir() if not p.name.endswith(".tmp")}

    # ---- the blocks still to do
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in result.chunks]
    delayed_blocks = result.to_delayed(optimize_graph=False)
    todo = []
    for index in np.ndindex(*result.numblocks):
        name = _block_name(index)
        if name in done:
            continue
        region = [(int(starts[a][i]), int(starts[a][i] + result.chunks[a][i]))
                  for a, i in enumerate(index)]
        todo.append((name, region, delayed_blocks[index]))
    summary.skipped = n_blocks - len(todo)
    array_path = str(work_dir / "0")
    finished = summary.skipped
    if progress is not None:
        progress(finished, n_blocks)
    write = dask.delayed(_write_block, pure=True)

    def one_done() -> None:
        nonlocal finished
        finished += 1
        summary.written += 1
        if progress is not None:
            progress(finished, n_blocks)
        if cancel is not None and cancel.is_set():
            from .engine import Cancelled

            raise Cancelled("enhancement cancelled; resume it with resume=True")

    for b0 in range(0, len(todo), BATCH_BLOCKS):
        if cancel is not None and cancel.is_set():
            from .engine import Cancelled

            raise Cancelled("enhancement cancelled; resume it with resume=True")
        batch = [write(blk, array_path, region, str(markers / name),
                       dask_key_name=f"msrnet-write-{run_key}-{name}")
                 for name, region, blk in todo[b0:b0 + BATCH_BLOCKS]]
        if client is not None:
            _run_distributed(client, batch, one_done)
        else:
            _run_local(dask, batch, local_workers, one_done)

    # ---- every block is in: finish and publish
    missing = n_blocks - sum(1 for p in markers.iterdir() if not p.name.endswith(".tmp"))
    if missing:
        raise RuntimeError(f"internal error: {missing} blocks have no done marker")
    group = zarr.open_group(str(work_dir), mode="r+")
    group.attrs["msrnet"] = {**info, "complete": True}
    shutil.rmtree(markers)
    if target.exists() or target.is_symlink():
        _remove_tree(target)  # overwrite: the old output stays until now
    os.replace(work_dir, target)
    summary.complete = True
    return summary


def _create_store(zarr, image: LazyImage, path: Path, shape, chunks, dtype, info: dict) -> None:
    fmt = image.zarr_format
    group = zarr.open_group(str(path), mode="w-", zarr_format=fmt)
    kwargs: dict = {}
    if fmt == 2:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        kwargs["dimension_names"] = [a["name"] for a in image.axes]
    group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0, **kwargs)
    group.attrs.update({**_ngff_attrs(image, image.name), "msrnet": info})


def _run_local(dask, batch: list, workers: int, one_done: Callable[[], None]) -> None:
    """Threaded scheduler on a pool of our own: on an error or interrupt the blocks
    in flight finish (data, then marker) before this returns."""
    from concurrent.futures import ThreadPoolExecutor

    from dask.callbacks import Callback

    keys = {d.key for d in batch}

    class _Count(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in keys:
                one_done()

    pool = ThreadPoolExecutor(workers, thread_name_prefix="msrnet-block")
    try:
        with _Count():
            dask.compute(*batch, scheduler="threads", pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_distributed(client, batch: list, one_done: Callable[[], None]) -> None:
    from distributed import as_completed

    futures = client.compute(batch)
    try:
        for future in as_completed(futures):
            future.result()  # raises the block's error here
            one_done()
    except BaseException:
        client.cancel(futures)
        raise
