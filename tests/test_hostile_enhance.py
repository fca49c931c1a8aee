"""Hostile or unusual enhance() calls (issue 15, engine and intensity items): each test
failed before its fix. Risky calls run in a subprocess under a time limit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from msrnet_napari import enhance, scaling_for
from msrnet_napari.checkpoint import Checkpoint
from msrnet_napari.normalize import Scaling, choose_scaling, from_unit, to_unit

from conftest import random_weights

CKPT = random_weights(seed=1)


def _run_isolated(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=str(__import__("pathlib").Path(__file__).parent))


@pytest.mark.parametrize("threads", [-1, 1025, 100_000, 2**31, 2.5, True, "4"])
def test_threads_are_validated_before_the_engine(threads):  # item 1
    with pytest.raises(ValueError, match="threads must be an integer in 0..1024"):
        enhance(np.zeros((16, 16), np.uint8), weights=CKPT, threads=threads)


@pytest.mark.parametrize("tile", [-1, 2**31, 1.5, True])
def test_tile_is_validated(tile):  # item 18
    with pytest.raises(ValueError, match="tile must be"):
        enhance(np.zeros((16, 16), np.uint8), weights=CKPT, tile=tile)


def test_progress_callback_may_call_enhance_with_the_same_weights():  # item 10
    proc = _run_isolated("""
        import numpy as np
        from conftest import random_weights
        from msrnet_napari import enhance
        ckpt = random_weights(seed=1)
        img = np.full((64, 64), 30, np.uint8)
        inner = []
        def progress(done, total):
            if not inner:
                inner.append(enhance(img[:16, :16], weights=ckpt, tile=16))
        out = enhance(img, weights=ckpt, tile=16, progress=progress)
        alone = enhance(img, weights=ckpt, tile=16)
        assert np.array_equal(out, alone) and inner[0].shape == (16, 16)
        print("ok")
    """, timeout=60)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("dtype", [np.uint32, np.int32, np.int64, np.uint64, np.uint16])
def test_white_stays_white_for_wide_integers(dtype):  # item 11
    info = np.iinfo(dtype)
    scaling = Scaling(0.0, float(info.max), "test")
    out = from_unit(np.ones((2, 2), np.float32), scaling, dtype)
    assert (out == info.max).all()
    assert (from_unit(np.zeros((2, 2), np.float32), scaling, dtype) == 0).all()


@pytest.mark.parametrize("dtype,white", [(np.int8, 127), (np.int16, 32767)])
def test_signed_integers_use_a_signed_white_level(dtype, white):  # item 12
    s = choose_scaling(np.dtype(dtype), minimum=0, maximum=white // 2)
    assert s.high <= white
    mid = np.full((8, 8), white // 2, dtype)
    back = from_unit(to_unit(mid, s), s, dtype)
    assert (back == mid).all()  # no clipping of mid-grey


def test_int32_photo_path_does_not_wrap():  # item 12
    img = np.full((16, 16, 3), 2**30, np.int32)
    out = enhance(img, weights=CKPT)
    assert out.dtype == np.int32 and out.min() >= 0


def test_huge_finite_weights_raise_instead_of_a_nan_image():  # item 13
    weights = {k: v.copy() for k, v in CKPT.weights.items()}
    for k in weights:
        if k.endswith("weight"):
            weights[k] *= np.float32(4e17)
    bad = Checkpoint(config=CKPT.config, weights=weights, metadata={}, source="<diverged>")
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        enhance(np.full((16, 16), 100, np.uint8), weights=bad)


def test_tiny_and_float64_intensity_ranges_keep_their_levels():  # item 14
    x = 1000.0 + np.linspace(0, 1, 64 * 64).reshape(64, 64) * 0.001
    unit = to_unit(x, Scaling(1000.0, 1000.001, "t"))
    assert len(np.unique(np.round(unit, 4))) > 1000  # float64 subtraction first: levels kept
    tiny = np.linspace(0, 1e-300, 64).reshape(8, 8)
    unit = to_unit(tiny, Scaling(0.0, 1e-300, "t"))
    assert np.isfinite(unit).all() and unit.max() > 0.9


@pytest.mark.parametrize("kwargs,match", [
    ({"intensity_range": (np.nan, 1.0)}, "intensity range must be finite"),
    ({"bit_depth": True}, "bit_depth must be"),
    ({"channel_axis": 1.5}, "channel_axis must be an integer"),
    ({"exposure_gain": float("nan")}, "exposure_gain must be a positive"),
])
def test_clear_messages_for_bad_options(kwargs, match):  # item 18
    data = np.zeros((3, 16, 16), np.uint8) if "channel_axis" in kwargs else np.zeros((16, 16), np.uint8)
    with pytest.raises(ValueError, match=match):
        enhance(data, weights=CKPT, **kwargs)


def test_a_failing_progress_callback_reports_its_own_error():  # item 18
    class Boom(RuntimeError):
        pass

    def progress(done, total):
        raise Boom("progress exploded")

    with pytest.raises(Boom, match="progress exploded"):
        enhance(np.zeros((32, 32), np.uint8), weights=CKPT, tile=16, progress=progress)

    class BadBool:  # a cancel token whose answer explodes
        def is_set(self):
            return BadBoolValue()

    class BadBoolValue:
        def __bool__(self):
            raise Boom("bool exploded")

    with pytest.raises(Boom, match="bool exploded"):
        enhance(np.zeros((32, 32), np.uint8), weights=CKPT, tile=16, progress=lambda d, t: None,
                cancel=BadBool())


def test_scaling_for_refuses_a_foreign_decision():
    d = scaling_for(np.zeros((16, 16), np.uint8), weights=CKPT)
    with pytest.raises(ValueError, match="already holds"):
        enhance(np.zeros((16, 16), np.uint8), weights=CKPT, scaling=d, bit_depth=8)


def test_thin_images_do_not_pay_for_a_thread_team():  # "Also" of issue 15; rule now in C++
    from msrnet_napari import _core

    engine = _core.Engine(CKPT.config.engine_dict(), CKPT.weights)
    assert engine.plan(1, 2000, 256, 2)[2] == 1  # a 1 x 2000 image: one thread
    assert engine.plan(4, 4096, 256, 8)[2] == 1
    assert engine.plan(40, 40, 256, 2)[2] == 1  # a tiny image
    assert engine.plan(256, 2048, 256, 2)[2] == 2  # real tiles keep the requested team
    assert engine.plan(2048, 2048, 256, 4) == (256, 64, 4)  # big images: every thread asked
