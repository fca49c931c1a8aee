"""``msrnet-enhance``: enhance low-light image files from the command line.

    msrnet-enhance IN [IN ...] -o OUTDIR [--weights CKPT] [--tile N] [--threads N]
                   [--device auto|cpu|cuda] [--precision fp32|tf32] [--suffix S]
                   [--format keep|png|tif|fits]
                   [--bit-depth N] [--offset DN] [--gain G] [--binning auto|1..4]
                   [--max-pixels N] [--overwrite] [--quiet]
                   [--lazy] [--resume] [--block N] [--scheduler ADDR | --workers N]
                   [--memory-limit SIZE]

Each input is a file or a folder (its image files, not recursive; hidden files
skipped). ``IN/<stem>.<ext>`` is written to ``OUTDIR/<stem><suffix>.<ext>``
(``--format`` picks the extension). An input file is never overwritten, not
even with ``--overwrite``, which only allows replacing earlier outputs.

Big data (:mod:`msrnet_napari.lazy_io`): an OME-Zarr folder (``*.zarr``), a TIFF
larger than 1 GiB, or any TIFF with ``--lazy`` is read lazily through dask and
written block by block to ``OUTDIR/<stem><suffix>.ome.zarr``; ``--resume``
continues an interrupted run (done blocks are skipped), ``--scheduler ADDR``
runs the blocks on a dask.distributed cluster, ``--workers N`` on a local one.

Exit status: 0 all files enhanced, 1 some failed (each reported on stderr as
``error: <file>: <reason>``), 2 usage error, 130 interrupted (Ctrl-C: the
running enhancement is cancelled and no partial output is left behind; a lazy
output keeps its finished blocks in a hidden ``.partial`` store for ``--resume``), 143
terminated (SIGTERM: the file being written is removed at once).

No torch and no napari are imported here; images are read/written by
:mod:`msrnet_napari.image_files` (the ``io`` extra: imageio, tifffile, tqdm).
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import __version__
from ._safe_open import dangling_symlink_error, file_kind
from .image_files import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageMeta,
    MissingDependencyError,
    check_writable,
    read_image,
    remove_partial_files,
    require_io,
    write_image,
)

PROG = "msrnet-enhance"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 128 + 15  # SIGTERM

_FORMAT_EXT = {"png": ".png", "tif": ".tif", "fits": ".fits"}
LAZY_TIFF_BYTES = 1 << 30  # TIFF files larger than this are read lazily (like --lazy)
SCHEDULER_TIMEOUT = "30s"  # --scheduler: give up connecting after this long

_EPILOG = """\
formats: PNG (8/16-bit), JPEG (8-bit), TIFF (8/16-bit, float, multi-page stacks).
Data type, shape, page count and colour layout are kept. JPEG input is written
as JPEG with quality 95 (lossy): use --format png or --format tif for a lossless
copy. A multi-page TIFF can only be written as TIFF.

big data: OME-Zarr folders (*.zarr), TIFFs over 1 GiB and, with --lazy, every
TIFF are processed lazily (dask), block by block, into OUTDIR/<stem><suffix>.ome.zarr
(NGFF; level 0 only; --format does not apply). An interrupted run (Ctrl-C, kill)
leaves OUTDIR/.<name>.partial: run the same command with --resume to continue.

exit status: 0 all ok, 1 some files failed, 2 usage error, 130 interrupted,
143 terminated (SIGTERM).
"""


class _Interrupted(Exception):
    """Ctrl-C was pressed; stop after cleaning up."""


class _Terminated(BaseException):
    """SIGTERM: leave now (a BaseException, so no ``except Exception`` swallows it)."""


class _Fatal(Exception):
    """An error that concerns every file (weights, device): stop the run."""


class CancelToken(threading.Event):
    """``is_set()`` for enhance(); also callable, for callers that poll."""

    def __call__(self) -> bool:
        return self.is_set()


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r}") from None


def _int_in(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """argparse type: an integer in low..high (a clear usage error otherwise)."""
    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must lie in {low}..{high}{what}, got {value}")
        return value

    return parse


def _binning_arg(text: str) -> Any:
    """argparse type for --binning: 'auto' or a factor the core accepts
    (:func:`msrnet_napari.binning.check_factor`, the one rule)."""
    from .binning import MAX_FACTOR, check_factor

    if text.strip().lower() == "auto":
        return "auto"
    try:
        return check_factor(_int(text))
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be 'auto' or a binning factor 1..{MAX_FACTOR} "
                                         f"(1 = off), got {text[:40]!r}") from None


def _memory_size(text: str) -> str:
    """argparse type for --memory-limit: 'auto' or a size such as 2GB, 512MiB, 10e9."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        from dask.utils import parse_bytes
    except ImportError:
        raise argparse.ArgumentTypeError("needs dask (pip install 'msrnet-napari[dask]')") \
            from None
    try:
        value = parse_bytes(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"not a size: {text[:40]!r} (e.g. 4GB, 512MiB)") \
            from None
    if value < 1 << 20:
        raise argparse.ArgumentTypeError(f"must be at least 1 MiB, got {text[:40]!r}")
    return str(int(value))


def _input_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be read as a file (dangling symlink, FIFO...), or None."""
    dangling = dangling_symlink_error(path)
    if dangling is not None:
        return f"{path}: {dangling.strerror}"
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return f"{path} is {file_kind(mode)}, not a regular file"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Enhance low-light images with MSR-net (C++/CUDA engine, no torch needed).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="IN",
                        help="image files or folders (folders: their %s files, not recursive)"
                        % "/".join(sorted(IMAGE_EXTENSIONS)))
    parser.add_argument("-o", "--output", "--outdir", dest="outdir", required=True,
                        metavar="OUTDIR", help="output folder (created if missing)")
    parser.add_argument("--model", choices=("auto", "photo", "microscopy"), default="auto",
                        help="bundled model: photo (sRGB photos) or microscopy (linear "
                             "scientific data: keeps dark level and intensities); auto = photo "
                             "for 8-bit RGB, microscopy otherwise (default: %(default)s)")
    parser.add_argument("--weights", metavar="PATH",
                        help="MSR-net checkpoint (.pt) instead of a bundled model")
    parser.add_argument("--offset", default="auto", metavar="DN",
                        help="linear (microscopy) model: dark level in the data's units, or "
                             "'auto' to estimate it per channel (default: %(default)s)")
    parser.add_argument("--gain", type=float, default=None, metavar="G",
                        help="linear (microscopy) model: multiply the signal above the dark "
                             "level by G, like a G-times longer exposure (default: 1, restore)")
    from .binning import MAX_FACTOR

    parser.add_argument("--binning", type=_binning_arg, default="auto",
                        metavar=f"auto|1..{MAX_FACTOR}",
                        help="linear (microscopy) model: restore f x f binned pixels, cycle-spun "
                             "back to the full pixel grid - less noise at a few photons per "
                             "pixel, at the cost of resolution; auto bins 2 x 2 where a "
                             "channel's signal-to-noise ratio is low (the decision line shows "
                             "it); 1 = off, always full resolution (default: %(default)s)")
    from .enhance import MAX_THREADS, MAX_TILE  # the limits enhance() enforces

    parser.add_argument("--tile", type=_int_in(0, MAX_TILE), default=None, metavar="N",
                        help="tile edge in pixels; memory is bounded by the tile "
                             "(0 = whole image; default: sized from the CPU's cache, "
                             "128-512, or 2048 on CUDA)")
    parser.add_argument("--threads", type=_int_in(0, MAX_THREADS, " (0 = all cores)"),
                        default=0, metavar="N",
                        help=f"CPU threads, at most {MAX_THREADS} (0 = all cores; "
                             f"default: %(default)s)")
    parser.add_argument("--max-pixels", type=_int_in(1, 1 << 40), default=DEFAULT_MAX_PIXELS,
                        metavar="N",
                        help="refuse images with more pixels than this (all pages together; "
                             "checked before decoding; default: %(default)s = 2**28)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="compute device (default: %(default)s = CUDA if available)")
    parser.add_argument("--precision", choices=("fp32", "tf32"), default="fp32",
                        help="CUDA arithmetic of the 3x3 convolutions: tf32 = tensor cores "
                             "(compute capability >= 8.0; error within 2e-3 of the output's scale, "
                             "6e-5 to 8e-5 measured in emulation); the CPU engine always computes "
                             "fp32 (default: %(default)s)")
    parser.add_argument("--suffix", default="_msrnet",
                        help="appended to each output file stem (default: %(default)s; "
                             "write --suffix=-x for values starting with '-')")
    parser.add_argument("--format", choices=("keep", "png", "tif", "fits"), default="keep",
                        help="output format: same as input, PNG, TIFF or FITS (gray images "
                             "and stacks) (default: %(default)s)")
    parser.add_argument("--bit-depth", type=_int_in(1, 32), default=None, metavar="N",
                        help="white level of integer data is 2**N-1 (e.g. 16 for dark 16-bit "
                             "images); default: detected from the data like enhance()")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (input files are never replaced)")
    big = parser.add_argument_group(
        "big data", "OME-Zarr folders, large TIFF stacks and dask clusters (outputs: "
                    "OUTDIR/<stem><suffix>.ome.zarr, written block by block)")
    big.add_argument("--lazy", action="store_true",
                     help="read every TIFF lazily and write OME-Zarr (automatic for OME-Zarr "
                          "folders and for TIFFs over 1 GiB)")
    big.add_argument("--resume", action="store_true",
                     help="continue an interrupted run: blocks already written are skipped; "
                          "outputs that exist are kept (eager files: skipped)")
    big.add_argument("--block", type=_int_in(1, 1 << 20), default=None, metavar="N",
                     help="work block edge in pixels along Y and X, rounded to whole output "
                          "chunks (default: about 2048 x 2048 pixels per block)")
    where = big.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDR",
                       help="dask.distributed scheduler address (e.g. tcp://host:8786); its "
                            "workers need msrnet-napari and the input/output paths")
    where.add_argument("--workers", type=_int_in(1, 1024), default=None, metavar="N",
                       help="start a local dask.distributed cluster of N worker processes "
                            "(default: threads in this process)")
    big.add_argument("--memory-limit", type=_memory_size, default=None, metavar="SIZE",
                     help="memory limit of each --workers process (e.g. 4GB; default: auto)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress output, only errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


# --------------------------------------------------------------------------- planning

@dataclass
class Job:
    source: Path
    target: Path
    lazy: bool = False  # OME-Zarr output, block by block (msrnet_napari.lazy_io)


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _collect_inputs(args: Sequence[str], quiet: bool) -> tuple[list[Path], int]:
    """Files named or found in folders (deduplicated), and the count of bad arguments."""
    files: list[Path] = []
    seen: set[str] = set()
    failed = 0
    for arg in args:
        path = Path(arg)
        if path.is_dir() and _is_zarr(path):
            found = [path]
        elif path.is_dir():
            entries = sorted(p for p in path.iterdir()
                             if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
            found = [p for p in entries if p.is_file()]
            found += sorted(p for p in path.iterdir() if not p.name.startswith(".")
                            and p.name.lower().endswith(".zarr") and p.is_dir())
            for p in entries:  # an image file that points nowhere: say so, never skip it
                dangling = dangling_symlink_error(p)
                if dangling is not None:
                    _err(f"{p}: {dangling.strerror}")
                    failed += 1
            if not found and not quiet:
                print(f"warning: {path}: no image files in this folder", file=sys.stderr)
        elif path.exists():
            found = [path]
        else:
            dangling = dangling_symlink_error(path)
            _err(f"{path}: {dangling.strerror}" if dangling is not None
                 else f"{path}: no such file or directory")
            failed += 1
            continue
        for p in found:
            key = _path_key(p)
            if key not in seen:
                seen.add(key)
                files.append(p)
    return files, failed


def _is_zarr(path: Path) -> bool:
    from .lazy_io import is_zarr_path

    return is_zarr_path(path)


def _is_lazy(source: Path, force_lazy: bool) -> bool:
    """OME-Zarr folders always; TIFFs with --lazy or when larger than LAZY_TIFF_BYTES."""
    if source.is_dir():
        return True
    if IMAGE_EXTENSIONS.get(source.suffix.lower()) != "tiff":
        return False
    try:
        return force_lazy or os.stat(source).st_size > LAZY_TIFF_BYTES
    except OSError:
        return False


def _path_key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def _file_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _target_for(source: Path, outdir: Path, suffix: str, fmt: str) -> Path:
    if fmt == "keep":
        ext = source.suffix
    elif IMAGE_EXTENSIONS.get(source.suffix.lower()) == IMAGE_EXTENSIONS[_FORMAT_EXT[fmt]]:
        ext = source.suffix  # already that format: keep .tiff / .TIF spelling
    else:
        ext = _FORMAT_EXT[fmt]
    return outdir / f"{source.stem}{suffix}{ext}"


def _plan(sources: list[Path], outdir: Path, suffix: str, fmt: str,
          overwrite: bool, resume: bool = False, lazy: bool = False,
          quiet: bool = False) -> tuple[list[Job], int]:
    jobs: list[Job] = []
    failed = 0
    claimed: dict[str, Path] = {}
    by_key = {_path_key(s): s for s in sources}
    by_id = {}
    for s in sources:
        try:
            by_id[_file_id(s)] = s
        except OSError:
            pass
    for source in sources:
        is_lazy = _is_lazy(source, lazy)
        if is_lazy:
            from .lazy_io import output_name

            target = outdir / output_name(source, suffix)
        else:
            target = _target_for(source, outdir, suffix, fmt)
        clash = by_key.get(_path_key(target))
        if clash is None and os.path.exists(target):
            try:  # hard links, case-insensitive file systems
                clash = by_id.get(_file_id(target))
            except OSError:
                pass
        if clash is not None:
            _err(f"{source}: output {target} is an input file ({clash}); refusing to "
                 f"overwrite it (choose another output folder or --suffix)")
        elif _path_key(target) in claimed:
            _err(f"{source}: output {target} would also be written for "
                 f"{claimed[_path_key(target)]}; use --suffix or separate runs")
        elif is_lazy and _inside(target, source):
            _err(f"{source}: output {target} lies inside the input or contains it; "
                 f"choose another output folder")
        elif target.is_dir() and not is_lazy:
            _err(f"{source}: output {target} is a folder")
        elif (target.exists() or target.is_symlink()) and resume and not is_lazy:
            claimed[_path_key(target)] = source
            if not quiet:
                print(f"{source}: output {target} exists, skipped (--resume)", file=sys.stderr)
            continue
        elif (target.exists() or target.is_symlink()) and not (overwrite or resume):
            _err(f"{source}: output {target} exists (use --overwrite to replace it"
                 + (" or --resume to continue)" if is_lazy else ")"))
        else:
            claimed[_path_key(target)] = source
            jobs.append(Job(source, target, is_lazy))
            continue
        failed += 1
    return jobs, failed


def _inside(a: Path, b: Path) -> bool:
    """True when one of the two paths is the other or lies inside it."""
    ra, rb = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return ra == rb or rb in ra.parents or ra in rb.parents


# --------------------------------------------------------------------------- enhancing

def enhance_image(array: np.ndarray, meta: ImageMeta, enhance: Callable[..., np.ndarray],
                  **kwargs: Any) -> np.ndarray:
    """Call ``enhance(array, **kwargs)`` with the layout described by ``meta``.

    RGB(A) samples go last with ``rgb=True`` (planar TIFF is transposed and back);
    gray+alpha enhances the gray samples and keeps alpha; other multi-sample data
    is enhanced channel by channel (``channel_axis``); gray data gets ``rgb=False``
    so that a stack of pages is never mistaken for colour.
    """
    axis = meta.channel_axis
    if meta.kind in ("rgb", "rgba"):
        moved = np.moveaxis(array, axis, -1) if axis not in (None, -1) else array
        out = enhance(moved, rgb=True, **kwargs)
        return np.moveaxis(out, -1, axis) if axis not in (None, -1) else out
    if meta.kind == "gray+alpha":
        out = np.array(array, copy=True)
        gray = np.take(array, 0, axis=axis)
        out_gray = enhance(gray, rgb=False, **kwargs)
        idx = [slice(None)] * array.ndim
        idx[axis] = 0
        out[tuple(idx)] = out_gray
        return out
    if meta.kind == "multichannel":  # enhance() wants channels before Y, X
        moved = np.moveaxis(array, axis, -3)
        out = enhance(moved, channel_axis=array.ndim - 3, **kwargs)
        return np.moveaxis(out, -3, axis)
    return enhance(array, rgb=False, **kwargs)


class _Progress:
    """tqdm bar over the tiles of one file (total known from the first callback)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=None, desc=label, unit="tile", file=sys.stderr,
                            leave=False, dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> bool:
        bar = self.bar
        if bar is not None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _SigintHandler:
    """First Ctrl-C: set the cancel token (the engine stops at the next tile)
    and stop before the next step; a second Ctrl-C raises KeyboardInterrupt.
    SIGTERM: remove the file being written and raise _Terminated at once (its
    default action would kill the process and leave the hidden .part file)."""

    def __init__(self, token: CancelToken) -> None:
        self.token = token
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_SigintHandler":
        if threading.current_thread() is threading.main_thread():
            for sig, handler in ((signal.SIGINT, self._handle),
                                 (getattr(signal, "SIGTERM", None), self._terminate)):
                if sig is None:
                    continue
                try:
                    self.previous[sig] = signal.signal(sig, handler)
                except (ValueError, OSError):
                    pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.token.is_set():
            remove_partial_files()
            raise KeyboardInterrupt
        self.token.set()
        print(f"\n{PROG}: interrupted, stopping (Ctrl-C again to abort at once)",
              file=sys.stderr, flush=True)

    def _terminate(self, signum: int, frame: Any) -> None:
        self.token.set()
        remove_partial_files()
        raise _Terminated

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


def _check_interrupt(token: CancelToken) -> None:
    if token.is_set():
        raise _Interrupted


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (ValueError, OSError)):
        return text
    return f"{type(exc).__name__}: {text}"


def _file_failed(job: Job, exc: Exception, what: str = "") -> bool:
    """Report an error that fails this file only (False); Ctrl-C (_Interrupted) goes on up."""
    if isinstance(exc, _Interrupted):
        raise exc
    _err(f"{job.source}: {what}{_reason(exc)}")
    return False


def _process(job: Job, *, enhance: Callable[..., np.ndarray], cancelled: type,
             token: CancelToken, enhance_kwargs: dict, show: bool,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """Enhance one file; False (after reporting) when the file failed."""
    try:
        array, meta = read_image(job.source, max_pixels=max_pixels)
        check_writable(job.target, array.shape, array.dtype, meta)
    except MissingDependencyError as exc:
        raise _Fatal(str(exc)) from exc
    except Exception as exc:
        return _file_failed(job, exc)
    _check_interrupt(token)
    progress = _Progress(job.source.name, show)
    decisions = getattr(enhance, "decisions", None)  # this file's (see _recording)
    if decisions is not None:
        decisions.clear()
    try:
        result = enhance_image(array, meta, enhance, progress=progress, cancel=token,
                               **enhance_kwargs)
        if decisions:  # FITS keeps it as HISTORY cards
            meta.info["history"] = "; ".join(d.describe() for d in decisions)
    except cancelled as exc:
        raise _Interrupted from exc
    except (FileNotFoundError, ImportError) as exc:  # no weights / no engine: all would fail
        raise _Fatal(_reason(exc)) from exc
    except Exception as exc:
        return _file_failed(job, exc)
    finally:
        progress.close()
    _check_interrupt(token)
    try:
        write_image(job.target, result, meta)
    except Exception as exc:
        return _file_failed(job, exc, f"cannot write {job.target}: ")
    return True


class _BlockProgress:
    """Progress of one lazy output: a tqdm bar over its blocks (or nothing)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.bar, self.label, self.enabled = None, label, enabled

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                self.enabled = False
                return
            self.bar = tqdm(total=total, initial=done, desc=self.label, unit="block",
                            file=sys.stderr, leave=False, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _process_lazy(job: Job, *, token: CancelToken, enhance_kwargs: dict, show: bool,
                  lazy_kwargs: dict) -> bool:
    """Enhance one OME-Zarr / lazy TIFF input into an OME-Zarr store, block by block."""
    from .lazy_io import LazyIOError, enhance_to_zarr, open_lazy, partial_path

    try:
        from .engine import Cancelled
    except ImportError as exc:
        raise _Fatal(_reason(exc)) from exc
    kwargs = {k: v for k, v in enhance_kwargs.items() if v is not None}
    progress = _BlockProgress(job.source.name, show)
    state: dict = {"done": 0, "total": 0}

    def report(done: int, total: int) -> None:
        state.update(done=done, total=total)
        progress(done, total)

    def decided(decision: Any) -> None:
        if show:
            print(f"  {decision.describe()}", file=sys.stderr, flush=True)

    try:
        image = open_lazy(job.source)
        summary = enhance_to_zarr(image, job.target, progress=report, cancel=token,
                                  on_decision=decided, **kwargs, **lazy_kwargs)
    except Cancelled as exc:
        progress.close()
        _note_partial(job, state, partial_path(job.target))
        raise _Interrupted from exc
    except (KeyboardInterrupt, _Interrupted, _Terminated):
        progress.close()
        _note_partial(job, state, partial_path(job.target))
        raise
    except (FileNotFoundError, ImportError) as exc:
        progress.close()
        if isinstance(exc, FileNotFoundError) and not os.path.exists(job.source):
            _err(f"{job.source}: {_reason(exc)}")
            return False
        raise _Fatal(_reason(exc)) from exc
    except (LazyIOError, ValueError, OSError, RuntimeError) as exc:
        progress.close()
        _err(f"{job.source}: {_reason(exc)}")
        return False
    except Exception as exc:  # a worker's error, a broken store...
        progress.close()
        _err(f"{job.source}: {_reason(exc)}")
        return False
    progress.close()
    if show:
        if summary.notes:
            print(f"  {job.target}: {', '.join(summary.notes)}", file=sys.stderr, flush=True)
        else:
            print(f"  {summary.written} block(s) written"
                  + (f", {summary.skipped} already done (resumed)" if summary.skipped else ""),
                  file=sys.stderr, flush=True)
    return True


def _note_partial(job: Job, state: dict, partial: Path) -> None:
    if partial.exists():
        print(f"{PROG}: {job.source}: {state['done']} of {state['total']} blocks are in "
              f"{partial}; run again with --resume to continue", file=sys.stderr, flush=True)


def _start_client(args: argparse.Namespace) -> tuple[Any, Any]:
    """(client, cluster) for --scheduler / --workers, else (None, None)."""
    if args.scheduler is None and args.workers is None:
        return None, None
    try:
        import distributed
    except ImportError:
        raise _Fatal("--scheduler and --workers need dask.distributed: "
                     "pip install 'msrnet-napari[dask]'") from None
    if args.scheduler is not None:
        try:
            return distributed.Client(args.scheduler, timeout=SCHEDULER_TIMEOUT), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise _Fatal(f"--scheduler {args.scheduler}: cannot connect: {_reason(exc)}") \
                from exc
    cluster = distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit=args.memory_limit or "auto")
    try:
        return distributed.Client(cluster), cluster
    except BaseException:
        cluster.close()
        raise


def _load_api() -> tuple[Callable[..., np.ndarray], type]:
    from .enhance import enhance as enhance_fn

    try:
        from .engine import Cancelled
    except ImportError:  # no compiled engine: enhance() reports that itself
        class Cancelled(Exception):  # type: ignore[no-redef]
            pass
    return enhance_fn, Cancelled


def _resolve_weights(weights: Optional[str], model: str) -> Any:
    """Load the checkpoint (or check the bundled model) once up front: errors concern
    the whole run. None = a bundled model chosen per image by ``enhance``."""
    from .models import available_models, model_info
    from .weights import resolve_weights

    if weights is not None:
        return resolve_weights(weights)
    for name in ([model] if model != "auto" else ["photo", "microscopy"]):
        if name not in available_models():
            raise FileNotFoundError(f"the bundled {name!r} model is not installed "
                                    f"({model_info(name).path}); pass --weights")
    return None


def _recording(enhance: Callable[..., Any], show: bool) -> Callable[..., Any]:
    """enhance() that reports each intensity decision (which model, scaling) on stderr."""
    def run(array, **kwargs):
        out, decision = enhance(array, return_decision=True, **kwargs)
        if decision is not None:
            run.decisions.append(decision)
        if show:
            print(f"  {decision.describe()}", file=sys.stderr, flush=True)
        return out

    run.decisions = []  # type: ignore[attr-defined]  # read back into FITS HISTORY cards
    return run


def _offset_arg(text: str) -> Any:
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--offset must be 'auto' or a number, got {text!r}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.weights is not None:
        problem = _input_problem(Path(args.weights))
        if problem is not None:
            parser.error(f"--weights: {problem}")
    if args.weights is not None and args.model != "auto":
        parser.error("--model and --weights exclude each other")
    try:
        _offset_arg(args.offset)
    except ValueError as exc:
        parser.error(str(exc))
    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        parser.error(f"-o: {outdir} exists and is not a folder")
    if os.sep in args.suffix or (os.altsep and os.altsep in args.suffix):
        parser.error("--suffix must not contain a path separator")
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    if args.memory_limit is not None and args.workers is None:
        parser.error("--memory-limit applies to --workers (a local cluster)")
    try:
        require_io()
    except MissingDependencyError as exc:
        _err(str(exc))
        return EXIT_FAILED

    sources, failed = _collect_inputs(args.inputs, args.quiet)
    jobs, plan_failed = _plan(sources, outdir, args.suffix, args.format, args.overwrite,
                              resume=args.resume, lazy=args.lazy, quiet=args.quiet)
    failed += plan_failed
    if not jobs:
        if not sources and not failed:
            _err("no image files to process")
        return EXIT_OK if sources and not failed else EXIT_FAILED

    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _err(f"{outdir}: cannot create output folder: {exc}")
        return EXIT_FAILED

    try:
        enhance, cancelled = _load_api()
        weights = _resolve_weights(args.weights, args.model)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        _err(f"weights: {_reason(exc)}" if not isinstance(exc, ImportError) else _reason(exc))
        return EXIT_FAILED
    if args.device == "cuda":
        try:
            from .engine import cuda_available

            has_cuda = cuda_available()
        except ImportError:
            has_cuda = False
        if not has_cuda:
            _err("--device cuda: no usable CUDA device (or this build has no CUDA support)")
            return EXIT_FAILED

    enhance_kwargs = dict(weights=weights, tile=args.tile, threads=args.threads,
                          device=args.device, precision=args.precision)
    if weights is None and args.model != "auto":
        enhance_kwargs["model"] = args.model
    if args.bit_depth is not None:
        enhance_kwargs["bit_depth"] = args.bit_depth
    offset = _offset_arg(args.offset)
    if offset is not None:
        enhance_kwargs["offset"] = offset
    if args.gain is not None:
        enhance_kwargs["gain"] = args.gain
    if args.binning != "auto":  # auto: the core's rule (and the photo model takes none)
        enhance_kwargs["binning"] = args.binning
    show = not args.quiet
    enhance = _recording(enhance, show)
    token = CancelToken()
    written = 0
    n = len(jobs)
    client = cluster = None
    lazy_kwargs: dict = {"resume": args.resume, "overwrite": args.overwrite,
                         "block": args.block}
    lazy_enhance_kwargs = dict(enhance_kwargs)
    try:
        with _SigintHandler(token):
            if any(job.lazy for job in jobs):
                client, cluster = _start_client(args)
                lazy_kwargs["client"] = client
                if args.workers is not None and args.threads == 0:  # cores shared by workers
                    lazy_enhance_kwargs["threads"] = max(1, (os.cpu_count() or 1) // args.workers)
            for i, job in enumerate(jobs, 1):
                _check_interrupt(token)
                if show:
                    print(f"[{i}/{n}] {job.source} -> {job.target}", file=sys.stderr, flush=True)
                if job.lazy:
                    ok = _process_lazy(job, token=token, enhance_kwargs=lazy_enhance_kwargs,
                                       show=show, lazy_kwargs=lazy_kwargs)
                else:
                    ok = _process(job, enhance=enhance, cancelled=cancelled, token=token,
                                  enhance_kwargs=enhance_kwargs, show=show,
                                  max_pixels=args.max_pixels)
                if ok:
                    written += 1
                else:
                    failed += 1
    except (KeyboardInterrupt, _Interrupted):
        remove_partial_files()
        print(f"{PROG}: interrupted; {written} file(s) written, the current one was not",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except _Terminated:
        remove_partial_files()
        print(f"{PROG}: terminated; {written} file(s) written, the current one was not",
              file=sys.stderr, flush=True)
        return EXIT_TERMINATED
    except _Fatal as exc:
        _err(str(exc))
        return EXIT_FAILED
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if show:
        print(f"{PROG}: {written} written, {failed} failed", file=sys.stderr, flush=True)
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":  # python -m msrnet_napari.cli
    sys.exit(main())
