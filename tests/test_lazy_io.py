"""Big data (msrnet_napari.lazy_io and msrnet-enhance's lazy path): OME-Zarr and large
TIFF stacks read lazily through dask, enhanced block by block into an OME-Zarr store,
on the threaded scheduler or a dask.distributed cluster; progress; resume.

Equality. A store equals the blocked dask computation ``enhance(dask_array, ...)``
bit for bit, and ``enhance(numpy_array)`` bit for bit wherever one block covers a
plane. Across block edges the engine's tile grid differs from the eager one, and
its Winograd convolutions then round differently (by ~1e-7, see cpp/engine_cpu.cpp),
so integer results may differ there by 1 in a few pixels (as for every dask path,
tests/test_enhance.py); those tests bound the difference and its frequency.
The models are tiny random ones (conftest.random_weights); no torch needed except
for the command-line runs in a subprocess (they need a checkpoint file).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from msrnet_napari.config import MSRNetConfig

from conftest import cli_checkpoint, imported_in_fresh_process, random_weights

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")
pytest.importorskip("msrnet_napari._core", reason="compiled engine not built")

from msrnet_napari import cli, enhance  # noqa: E402
from msrnet_napari import lazy_io as L  # noqa: E402

enhance_module = importlib.import_module("msrnet_napari.enhance")

PHOTO = MSRNetConfig(depth=2, width=8)
LINEAR = MSRNetConfig(depth=2, width=8, intensity="linear")
TILE = 32
AXES_TCYX = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
             {"name": "y", "type": "space", "unit": "micrometer"},
             {"name": "x", "type": "space", "unit": "micrometer"}]


@pytest.fixture(scope="module")
def photo():
    return random_weights(PHOTO, seed=0)


@pytest.fixture(scope="module")
def linear():
    return random_weights(LINEAR, seed=1)


def _dark(shape, dtype=np.uint16, seed=0, high=3000):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * high).astype(dtype)


def write_ome_zarr(path, array, axes, chunks, *, zarr_format=2, scale=None, omero=None):
    """A plain OME-Zarr image (NGFF 0.4 on zarr v2, 0.5 on v3) with one level."""
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    kw = ({"chunk_key_encoding": {"name": "v2", "separator": "/"}} if zarr_format == 2
          else {"dimension_names": [a["name"] for a in axes]})
    group.create_array("0", shape=array.shape, dtype=array.dtype, chunks=chunks, **kw)[...] = array
    ms = {"name": Path(path).name, "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": scale or [1.0] * array.ndim}]}]}
    if zarr_format == 2:
        ms["version"] = "0.4"
        attrs = {"multiscales": [ms]}
        if omero:
            attrs["omero"] = omero
    else:
        attrs = {"ome": {"version": "0.5", "multiscales": [ms], **({"omero": omero} if omero else {})}}
    group.attrs.update(attrs)
    return Path(path)


def read_store(path):
    return zarr.open_array(str(Path(path) / "0"), mode="r")


def chunk_files(path):
    """{relative path: bytes} of every chunk file of level 0."""
    root = Path(path) / "0"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith((".", "zarr.json"))}


def blocked(array, image_chunks, tile=TILE, **kw):
    """The dask reference: enhance() on the same blocks, computed."""
    return enhance(da.from_array(array, chunks=image_chunks), tile=tile, **kw).compute()


# --------------------------------------------------------------------------- (a) round trip

@pytest.mark.parametrize("which", ["linear", "photo"])
def test_ome_zarr_round_trip_equals_eager(which, photo, linear, tmp_path):
    ckpt = {"photo": photo, "linear": linear}[which]
    a = _dark((2, 3, 150, 130))
    src = write_ome_zarr(tmp_path / "in.ome.zarr", a, AXES_TCYX, (1, 1, 64, 64),
                         scale=[1.0, 1.0, 0.25, 0.25],
                         omero={"channels": [{"label": f"ch{i}"} for i in range(3)]})
    image = L.open_lazy(src)
    assert image.channel_axis == 1 and not image.rgb and image.shape == a.shape
    assert isinstance(image.data, da.Array) and image.data.chunksize == (1, 1, 64, 64)
    eager, decision = enhance(a, weights=ckpt, channel_axis=1, tile=TILE, return_decision=True)

    # one block per plane: the eager result bit for bit
    whole = tmp_path / "whole.ome.zarr"
    summary = L.enhance_to_zarr(image, whole, weights=ckpt, tile=TILE, block=256)
    assert summary.complete and summary.blocks == summary.written
    out = read_store(whole)
    assert out.shape == a.shape and out.dtype == a.dtype and out.chunks == (1, 1, 64, 64)
    np.testing.assert_array_equal(out[...], eager)

    # blocks of 64 x 64: the blocked dask computation bit for bit, eager up to rounding
    small = tmp_path / "small.ome.zarr"
    summary = L.enhance_to_zarr(image, small, weights=ckpt, tile=TILE, block=64)
    # rows 64 + 64 + 22, columns 64 + 66 (a 2-pixel last block joins the one before);
    # the linear model's blocks hold every channel (one decision per channel)
    channels = (3,) if which == "linear" else (1, 1, 1)
    assert summary.blocks == 2 * len(channels) * 3 * 2
    got = read_store(small)[...]
    ref = blocked(a, ((1, 1), channels, (64, 64, 22), (64, 66)), weights=ckpt, channel_axis=1)
    np.testing.assert_array_equal(got, ref)
    diff = np.abs(got.astype(np.int64) - eager)
    assert diff.max() <= 1 and np.count_nonzero(diff) < 1e-3 * a.size

    # metadata: NGFF copied, decision and model recorded
    attrs = dict(zarr.open_group(str(small), mode="r").attrs)
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and ms["axes"] == AXES_TCYX
    assert ms["datasets"] == [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 1.0, 0.25, 0.25]}]}]
    assert attrs["omero"]["channels"][2]["label"] == "ch2"
    info = attrs["msrnet"]
    assert info["complete"] is True and info["decision"] == decision.describe()
    assert info["model"] == "checkpoint" and info["source"] == str(src)
    assert not (small / L.MARKERS).exists() and not L.partial_path(small).exists()


def test_ngff_05_zarr_v3_round_trip(linear, tmp_path):
    a = _dark((3, 90, 70), seed=3)
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
            {"name": "x", "type": "space"}]
    src = write_ome_zarr(tmp_path / "v3.ome.zarr", a, axes, (1, 45, 35), zarr_format=3)
    image = L.open_lazy(src)
    assert image.zarr_format == 3 and image.channel_axis == 0
    target = tmp_path / "out.ome.zarr"
    L.enhance_to_zarr(image, target, weights=linear, tile=TILE, block=512)
    group = zarr.open_group(str(target), mode="r")
    assert group.metadata.zarr_format == 3
    assert group.attrs["ome"]["version"] == "0.5"
    assert group.attrs["ome"]["multiscales"][0]["axes"] == axes
    np.testing.assert_array_equal(read_store(target)[...],
                                  enhance(a, weights=linear, channel_axis=0, tile=TILE))


def test_bad_inputs_are_refused(tmp_path):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=(4, 4), dtype="u1")
    with pytest.raises(L.LazyIOError, match="multiscales"):
        L.open_lazy(tmp_path / "plain.zarr")
    a = np.zeros((3, 8, 8), np.uint8)
    bad_axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"},
                {"name": "c", "type": "channel"}]
    with pytest.raises(L.LazyIOError, match="space axes"):
        L.open_lazy(write_ome_zarr(tmp_path / "yxc.zarr", a, bad_axes, (3, 8, 8)))
    escape = write_ome_zarr(tmp_path / "esc.zarr", a, AXES_TCYX[1:], (3, 8, 8))
    attrs = dict(zarr.open_group(str(escape)).attrs)
    attrs["multiscales"][0]["datasets"][0]["path"] = "../plain.zarr/0"
    zarr.open_group(str(escape), mode="r+").attrs.update(attrs)
    with pytest.raises(L.LazyIOError, match="leaves the store"):
        L.open_lazy(escape)


# --------------------------------------------------------------------------- (b) cluster

_SAMPLER: dict = {}


def _start_memory_sampler() -> int:
    """In a worker: load the engine and zarr as a block would, then sample the resident
    memory every 5 ms; returns the resident memory now (the baseline), bytes."""
    import threading

    import psutil

    sys.path.insert(0, str(Path(__file__).parent))
    import zarr as _zarr  # noqa: F401

    import msrnet_napari

    from conftest import random_weights as rw

    msrnet_napari.enhance(np.zeros((64, 64), np.uint16) + 5, weights=rw(PHOTO, seed=0),
                          tile=TILE, threads=1)
    proc = psutil.Process()
    _SAMPLER.update(peak=proc.memory_info().rss, stop=threading.Event())

    def sample():
        while not _SAMPLER["stop"].wait(0.005):
            _SAMPLER["peak"] = max(_SAMPLER["peak"], proc.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    return proc.memory_info().rss


def _stop_memory_sampler() -> int:
    _SAMPLER["stop"].set()
    return _SAMPLER["peak"]


@pytest.mark.slow
def test_local_cluster_with_memory_limit_below_the_array(photo, tmp_path):
    distributed = pytest.importorskip("distributed")
    a = _dark((6, 2048, 2048), seed=5)  # 48 MiB
    limit = 30 * 2**20  # per worker: less than the array (and than its input + output)
    assert a.nbytes > limit
    src = write_ome_zarr(tmp_path / "big.ome.zarr", a, AXES_TCYX[:1] + AXES_TCYX[2:],
                         (1, 512, 512))
    image = L.open_lazy(src)
    target = tmp_path / "out.ome.zarr"
    ticks = []
    # The limit is below a bare Python worker's own footprint (~150 MB), so the
    # nanny must not kill or pause it for that; workers still spill above it.
    # What is checked instead: no worker's resident memory (sampled every 5 ms)
    # grows above its baseline by the array's size.
    with __import__("dask").config.set({"distributed.worker.memory.pause": False,
                                        "distributed.worker.memory.terminate": False}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      memory_limit=limit, local_directory=str(tmp_path)) as cluster, \
                distributed.Client(cluster) as client:
            assert all(w["memory_limit"] == limit
                       for w in client.scheduler_info()["workers"].values())
            before = client.run(_start_memory_sampler)
            t0 = time.perf_counter()
            summary = L.enhance_to_zarr(image, target, weights=photo, tile=256, threads=1,
                                        block=512, client=client,
                                        progress=lambda d, n: ticks.append((d, n)))
            elapsed = time.perf_counter() - t0
            after = client.run(_stop_memory_sampler)
    assert summary.complete and summary.blocks == 6 * 16 and summary.written == 96
    assert ticks[-1] == (96, 96) and len(ticks) == 97
    growth = {w: after[w] - before[w] for w in before}
    assert max(growth.values()) < a.nbytes, (growth, elapsed)
    got = read_store(target)[...]
    print("baseline / peak growth per worker (MB):",
          [(round(before[w] / 1e6), round(g / 1e6, 1)) for w, g in growth.items()],
          f"run {elapsed:.1f} s")
    np.testing.assert_array_equal(got, blocked(a, (1, 512, 512), tile=256, weights=photo,
                                               rgb=False))
    eager = enhance(a, weights=photo, tile=256)
    diff = np.abs(got.astype(np.int64) - eager)
    assert diff.max() <= 1 and np.count_nonzero(diff) < 1e-3 * a.size


# --------------------------------------------------------------------------- (c) resume

class _Stop(Exception):
    pass


def _counting(monkeypatch):
    """Count enhance() calls on numpy blocks (the work done per block)."""
    calls = []
    original = enhance_module.enhance

    def counted(array, **kw):
        if isinstance(array, np.ndarray):
            calls.append(array.shape)
        return original(array, **kw)

    monkeypatch.setattr(enhance_module, "enhance", counted)
    return calls


def test_resume_skips_done_blocks_and_equals_an_uninterrupted_run(linear, tmp_path, monkeypatch):
    a = _dark((2, 2, 200, 190), seed=7)
    src = write_ome_zarr(tmp_path / "in.ome.zarr", a, AXES_TCYX, (1, 1, 64, 64))
    image = L.open_lazy(src)
    run = dict(weights=linear, tile=TILE, block=64)
    full = tmp_path / "full.ome.zarr"
    L.enhance_to_zarr(image, full, **run)

    target = tmp_path / "out.ome.zarr"
    partial = L.partial_path(target)

    def stop_after(k):
        def progress(done, total):
            if done >= k:
                raise _Stop
        return progress

    calls = _counting(monkeypatch)
    with pytest.raises(_Stop):
        L.enhance_to_zarr(image, target, progress=stop_after(5), local_workers=2, **run)
    assert not target.exists() and partial.is_dir()
    info = dict(zarr.open_group(str(partial), mode="r").attrs)["msrnet"]
    assert info["complete"] is False
    done = sorted(p.name for p in (partial / L.MARKERS).iterdir())
    # t x y blocks (64, 64, 72) x x blocks (64, 64, 62); channels together (linear model)
    total = 2 * 3 * 3
    assert 5 <= len(done) < total and len(calls) >= len(done)

    # an interrupted chunk is redone: spoil a chunk of the last block (t 1, rows 192..199,
    # columns 128..189), and drop that block's marker if it made it
    spoilt = partial / "0" / "1" / "0" / "3" / "2"
    if (partial / L.MARKERS / "1.0.2.2").exists():
        (partial / L.MARKERS / "1.0.2.2").unlink()
    spoilt.parent.mkdir(parents=True, exist_ok=True)
    spoilt.write_bytes(b"half a chunk")
    # what a kill in the middle of zarr's atomic chunk write or of our marker write leaves
    stale = [spoilt.with_suffix(f".{'a' * 32}.partial"),
             partial / L.MARKERS / f"1.0.2.2.{'b' * 32}.tmp"]
    for path in stale:
        path.write_bytes(b"cut short")

    with pytest.raises(L.LazyIOError, match="--resume"):  # neither flag: refused
        L.enhance_to_zarr(image, target, **run)
    with pytest.raises(L.LazyIOError, match="other input or settings"):
        L.enhance_to_zarr(image, target, resume=True, **{**run, "block": 128})

    calls.clear()
    ticks = []
    summary = L.enhance_to_zarr(image, target, resume=True,
                                progress=lambda d, n: ticks.append(d), **run)
    now_done = total - summary.written
    assert summary.complete and summary.skipped == now_done
    assert "removed 2 temporary file(s) of interrupted writes" in summary.notes
    assert summary.written == total - summary.skipped == len(calls)  # done ones not recomputed
    assert ticks[0] == summary.skipped and ticks[-1] == total
    assert not partial.exists() and target.is_dir()
    np.testing.assert_array_equal(read_store(target)[...], read_store(full)[...])
    assert chunk_files(target) == chunk_files(full)  # identical bytes, chunk by chunk

    # resuming a finished output does nothing; overwrite redoes it all
    calls.clear()
    assert L.enhance_to_zarr(image, target, resume=True, **run).notes == ["already complete"]
    assert calls == []
    L.enhance_to_zarr(image, target, overwrite=True, **run)
    assert len(calls) == total and chunk_files(target) == chunk_files(full)


def test_cancel_token_stops_after_blocks_in_flight(photo, tmp_path):
    import threading

    from msrnet_napari import Cancelled

    a = _dark((4, 128, 128), seed=8)
    image = L.open_lazy(write_ome_zarr(tmp_path / "in.zarr", a, AXES_TCYX[:1] + AXES_TCYX[2:],
                                       (1, 64, 64)))
    token = threading.Event()

    def progress(done, total):
        if done == 3:
            token.set()

    target = tmp_path / "o.ome.zarr"
    with pytest.raises(Cancelled):
        L.enhance_to_zarr(image, target, weights=photo, tile=TILE, block=64, progress=progress,
                          cancel=token)
    assert not target.exists()
    assert 3 <= len(list((L.partial_path(target) / L.MARKERS).iterdir())) < 16


def test_never_writes_into_the_input(photo, tmp_path):
    a = _dark((64, 64), seed=9)
    src = write_ome_zarr(tmp_path / "in.zarr", a, AXES_TCYX[2:], (32, 32))
    image = L.open_lazy(src)
    before = chunk_files(src)
    for target in (src, src / "inside.ome.zarr"):
        with pytest.raises(L.LazyIOError, match="input"):
            L.enhance_to_zarr(image, target, weights=photo, overwrite=True)
    assert chunk_files(src) == before
    other = tmp_path / "user_folder.ome.zarr"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(L.LazyIOError, match="not an output"):
        L.enhance_to_zarr(image, other, weights=photo, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- (d) progress

def test_progress_is_reported(photo, tmp_path):
    a = _dark((2, 128, 128), seed=10)
    image = L.open_lazy(write_ome_zarr(tmp_path / "p.zarr", a, AXES_TCYX[:1] + AXES_TCYX[2:],
                                       (1, 64, 64)))
    ticks = []
    L.enhance_to_zarr(image, tmp_path / "o.ome.zarr", weights=photo, tile=TILE, block=64,
                      progress=lambda d, n: ticks.append((d, n)))
    assert ticks == [(i, 8) for i in range(9)]


# --------------------------------------------------------------------------- (e) TIFF

tifffile = pytest.importorskip("tifffile")


@pytest.mark.parametrize("case", ["stack", "rgb_tiled", "rgb_planar", "miniswhite", "imagej"])
def test_big_tiff_read_lazily_equals_the_eager_read(case, photo, tmp_path):
    from msrnet_napari.image_files import read_image

    path = tmp_path / "big.tif"
    if case == "stack":
        a = _dark((5, 120, 100), seed=11)
        tifffile.imwrite(path, a, photometric="minisblack", tile=(32, 32))
    elif case == "rgb_tiled":
        a = _dark((96, 80, 3), np.uint8, seed=12, high=60)
        tifffile.imwrite(path, a, photometric="rgb", tile=(32, 32))
    elif case == "rgb_planar":
        a = _dark((3, 96, 80), np.uint8, seed=13, high=60)
        tifffile.imwrite(path, a, photometric="rgb", planarconfig="separate", rowsperstrip=16)
    elif case == "miniswhite":
        a = _dark((3, 64, 64), seed=14)
        tifffile.imwrite(path, a, photometric="miniswhite")
    else:
        a = _dark((2, 3, 64, 72), seed=15)  # Z, C, Y, X hyperstack
        tifffile.imwrite(path, a, imagej=True, metadata={"axes": "ZCYX"})
    image = L.open_tiff(path)
    eager, meta = read_image(path)
    lazy = image.data
    assert isinstance(lazy, da.Array)
    lazy_values = image.enhance_input().compute()
    if case == "miniswhite":
        np.testing.assert_array_equal(lazy.compute(), a)  # as stored; enhanced inverted
    if case == "imagej":
        assert [x["name"] for x in image.axes] == ["c", "z", "y", "x"]
        np.testing.assert_array_equal(lazy.compute().reshape(eager.shape), eager)
        np.testing.assert_array_equal(lazy_values, np.moveaxis(a, 1, 0))
        return
    if case.startswith("rgb"):
        assert image.rgb and [x["name"] for x in image.axes] == ["c", "y", "x"]
        eager_hwc = np.moveaxis(eager, meta.channel_axis, -1)
        np.testing.assert_array_equal(lazy_values, eager_hwc)
        target = tmp_path / "o.ome.zarr"
        L.enhance_to_zarr(image, target, weights=photo, tile=TILE, block=4096)
        np.testing.assert_array_equal(read_store(target)[...],
                                      np.moveaxis(enhance(eager_hwc, weights=photo, tile=TILE), -1, 0))
        return
    np.testing.assert_array_equal(lazy_values, eager)
    target = tmp_path / "o.ome.zarr"
    L.enhance_to_zarr(image, target, weights=photo, tile=TILE, block=4096)
    assert [x["name"] for x in image.axes] == ["z", "y", "x"]
    np.testing.assert_array_equal(read_store(target)[...], enhance(eager, weights=photo, tile=TILE,
                                                                   rgb=False))


# --------------------------------------------------------------------------- (f) binning

def _starved(shape, photons=4.0, seed=0):
    """A few photons per pixel over a dark level of 100 (like tests/test_binning.py's
    _poisson_scene): the linear model's decision bins it 2 x 2."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[-2], 0:shape[-1]]
    clean = np.zeros(shape[-2:])
    for cy, cx, amp in ((0.3, 0.3, 1.0), (0.7, 0.6, 0.6), (0.4, 0.8, 0.3)):
        clean += amp * np.exp(-((yy - cy * shape[-2]) ** 2 + (xx - cx * shape[-1]) ** 2) / 72.0)
    counts = rng.poisson(photons * clean, shape) + rng.normal(0, 1.5, shape)
    return np.clip(np.rint(100 + counts), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("source", ["zarr", "tiff"])
def test_photon_starved_data_binned_lazily_equals_eager(source, tmp_path):
    """Small blocks with the binned halo (binning.halo): the eager result within 1 DN.
    The last blocks (19 and 18 pixels) are thinner than the binned halo (20) but not
    than the receptive radius (9) or a quarter block (16): they must join the block
    before (map_overlap would rechunk them)."""
    from msrnet_napari.binning import halo

    config = MSRNetConfig(depth=8, width=4, intensity="linear")  # receptive radius 9
    weights = random_weights(config, seed=2)
    a = _starved((2, 64 * 2 + 19, 64 * 2 + 18))
    if source == "zarr":
        image = L.open_lazy(write_ome_zarr(tmp_path / "in.ome.zarr", a,
                                           AXES_TCYX[:1] + AXES_TCYX[2:], (1, 64, 64)))
    else:
        tifffile.imwrite(tmp_path / "in.tif", a, photometric="minisblack", tile=(64, 64))
        image = L.open_tiff(tmp_path / "in.tif")
    assert image.output_chunks() == (1, 64, 64)
    eager, decision = enhance(a, weights=weights, rgb=False, tile=TILE, return_decision=True)
    assert decision.max_binning == 2 and "binning 2x2" in decision.describe()
    assert max(config.receptive_radius, 64 // 4) < 18 < 19 <= halo(2, config.receptive_radius)
    seen = []
    target = tmp_path / "out.ome.zarr"
    summary = L.enhance_to_zarr(image, target, weights=weights, tile=TILE, block=64,
                                on_decision=seen.append)
    assert [d.max_binning for d in seen] == [2] and seen[0].describe() == decision.describe()
    assert summary.complete and summary.blocks == 2 * 2 * 2  # the thin last blocks joined
    got = read_store(target)[...].astype(np.int64)
    assert np.abs(got - eager).max() <= 1
    info = dict(zarr.open_group(str(target), mode="r").attrs)["msrnet"]
    assert "binning 2x2" in info["decision"]

    # binning=1 goes through to the decision: the full-resolution result
    off = tmp_path / "off.ome.zarr"
    L.enhance_to_zarr(image, off, weights=weights, tile=TILE, block=64, binning=1,
                      on_decision=seen.append)
    assert seen[-1].max_binning == 1 and "binning" not in seen[-1].describe()
    plain = enhance(a, weights=weights, rgb=False, tile=TILE, binning=1)
    assert np.abs(read_store(off)[...].astype(np.int64) - plain).max() <= 1


# --------------------------------------------------------------------------- command line

@pytest.fixture
def cli_weights(tmp_path, monkeypatch):
    """(extra CLI args, weights for enhance()) naming the same random photo model."""
    return cli_checkpoint(PHOTO, 0, tmp_path, monkeypatch)


def test_cli_routes_zarr_and_big_tiffs(cli_weights, tmp_path, monkeypatch, capsys):
    extra, weights = cli_weights
    a = _dark((2, 100, 90), seed=20)
    write_ome_zarr(tmp_path / "in" / "cells.ome.zarr", a, AXES_TCYX[:1] + AXES_TCYX[2:],
                   (1, 50, 45))
    tifffile.imwrite(tmp_path / "in" / "stack.tif", a, photometric="minisblack")
    tifffile.imwrite(tmp_path / "in" / "small.tif", a[0], photometric="minisblack")
    monkeypatch.setattr(cli, "LAZY_TIFF_BYTES", 30_000)  # stack.tif (36 kB) counts as big
    out = tmp_path / "out"
    rc = cli.main([str(tmp_path / "in"), "-o", str(out), "--tile", str(TILE), *extra])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert sorted(os.listdir(out)) == ["cells_msrnet.ome.zarr", "small_msrnet.tif",
                                       "stack_msrnet.ome.zarr"]
    assert "block(s) written" in err and "model checkpoint" in err  # progress and decision
    expected = enhance(a, weights=weights, tile=TILE, rgb=False)
    for name in ("cells_msrnet.ome.zarr", "stack_msrnet.ome.zarr"):
        np.testing.assert_array_equal(read_store(out / name)[...], expected)
    # existing outputs: refused, then --resume keeps them (lazy: complete; eager: skipped)
    assert cli.main([str(tmp_path / "in"), "-o", str(out), *extra, "-q"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert cli.main([str(tmp_path / "in"), "-o", str(out), "--tile", str(TILE), *extra,
                     "--resume"]) == 0
    err = capsys.readouterr().err
    assert "already complete" in err and "skipped (--resume)" in err
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path / "in"), "-o", str(out), "--resume", "--overwrite"])
    assert exc.value.code == 2


def test_cli_lazy_binning(tmp_path, monkeypatch, capsys):
    """--binning reaches the lazy path's decision (and so its halo) like the eager one's."""
    weights = random_weights(LINEAR, seed=1)
    monkeypatch.setattr(cli, "_resolve_weights", lambda *args: weights)
    a = _starved((2, 100, 90), seed=3)
    src = write_ome_zarr(tmp_path / "s.ome.zarr", a, AXES_TCYX[:1] + AXES_TCYX[2:], (1, 64, 64))
    for value, word in (("auto", "binning 2x2"), ("1", None)):
        out = tmp_path / f"o{value}"
        assert cli.main([str(src), "-o", str(out), "--tile", str(TILE), "--binning", value]) == 0
        lines = [line for line in capsys.readouterr().err.splitlines() if "intensities):" in line]
        assert len(lines) == 1 and (word in lines[0] if word else "binning" not in lines[0])
        eager = enhance(a, weights=weights, rgb=False, tile=TILE,
                        **({} if value == "auto" else {"binning": int(value)}))
        got = read_store(out / "s_msrnet.ome.zarr")[...].astype(np.int64)
        assert np.abs(got - eager).max() <= 1


def test_cli_workers_local_cluster(cli_weights, tmp_path, capsys):
    pytest.importorskip("distributed")
    extra, weights = cli_weights
    a = _dark((3, 96, 96), seed=21)
    tifffile.imwrite(tmp_path / "s.tif", a, photometric="minisblack", tile=(48, 48))
    rc = cli.main([str(tmp_path / "s.tif"), "-o", str(tmp_path / "o"), "--lazy", "--workers", "2",
                   "--memory-limit", "1GB", "--tile", str(TILE), "--block", "48", *extra])
    err = capsys.readouterr().err
    assert rc == 0, err
    got = read_store(tmp_path / "o" / "s_msrnet.ome.zarr")[...]
    np.testing.assert_array_equal(got, blocked(a, (1, 48, 48), weights=weights, rgb=False))


def test_cli_scheduler_address(cli_weights, tmp_path, capsys, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(cli, "SCHEDULER_TIMEOUT", "2s")
    extra, weights = cli_weights
    a = _dark((2, 128, 96), seed=23)
    src = write_ome_zarr(tmp_path / "a.zarr", a, AXES_TCYX[:1] + AXES_TCYX[2:], (1, 64, 48))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        rc = cli.main([str(src), "-o", str(tmp_path / "o"), "--scheduler",
                       cluster.scheduler_address, "--tile", str(TILE), "--block", "64", *extra])
    err = capsys.readouterr().err
    assert rc == 0, err
    np.testing.assert_array_equal(read_store(tmp_path / "o" / "a_msrnet.ome.zarr")[...],
                                  blocked(a, (1, 64, 48), weights=weights, rgb=False))
    rc = cli.main([str(src), "-o", str(tmp_path / "o2"), "--scheduler", "tcp://127.0.0.1:9",
                   *extra, "-q"])
    assert rc == 1 and "--scheduler" in capsys.readouterr().err


def test_lazy_io_imports_nothing_heavy():
    assert imported_in_fresh_process(
        ["msrnet_napari.lazy_io", "msrnet_napari.cli"],
        ["torch", "napari", "qtpy", "zarr", "dask", "tifffile"]) == []


def test_cli_usage_errors(tmp_path):
    for argv in (["x.zarr", "-o", "o", "--memory-limit", "1GB"],
                 ["x.zarr", "-o", "o", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
                 ["x.zarr", "-o", "o", "--workers", "2", "--memory-limit", "lots"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2


def _markers(out):
    partial = L.partial_path(out)
    try:
        return len(os.listdir(partial / L.MARKERS))
    except OSError:
        return 0


@pytest.mark.slow
def test_cli_killed_run_resumes(tmp_path):
    """SIGKILL in the middle of a run (no cleanup at all), then --resume: the result
    equals an uninterrupted run, chunk file by chunk file."""
    pytest.importorskip("torch")
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    weights = save_checkpoint(init_weights(MSRNet(PHOTO), seed=0), tmp_path / "w.pt")
    a = _dark((8, 512, 512), seed=22)
    write_ome_zarr(tmp_path / "in.ome.zarr", a, AXES_TCYX[:1] + AXES_TCYX[2:], (1, 64, 64))
    base = [sys.executable, "-m", "msrnet_napari.cli", str(tmp_path / "in.ome.zarr"),
            "--weights", str(weights), "--tile", "64", "--threads", "1", "--block", "64", "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    ref = subprocess.run([*base, "-o", str(tmp_path / "ref")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "out"
    proc = subprocess.Popen([*base, "-o", str(out)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _markers(out / "in_msrnet.ome.zarr") < 20 and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    n_done = _markers(out / "in_msrnet.ome.zarr")
    assert proc.returncode == -signal.SIGKILL and 20 <= n_done < 512, n_done
    res = subprocess.run([*base, "-o", str(out), "--resume"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    done, ref_store = out / "in_msrnet.ome.zarr", tmp_path / "ref" / "in_msrnet.ome.zarr"
    assert chunk_files(done) == chunk_files(ref_store)
    info = json.loads((done / ".zattrs").read_text())["msrnet"]
    assert info["complete"] is True
