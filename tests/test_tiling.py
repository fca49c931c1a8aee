"""Tiling: results independent of the tile size, memory bounded by the tile."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from msrnet_napari import _core
from msrnet_napari.config import MSRNetConfig

from conftest import random_weights


def engine(config: MSRNetConfig, seed: int = 0):
    return _core.Engine(config.engine_dict(), random_weights(config, seed).weights)


CONFIGS = [MSRNetConfig(), MSRNetConfig(log_bases=(1.0, 50.0), depth=3, width=8, f1_width=5)]


@pytest.mark.parametrize("config,tiles", [
    (CONFIGS[0], (37, 64, 100, 149)),               # halo 11: keep tiles >= 3 * halo
    (CONFIGS[1], (16, 37, 64, 99, 100, 149, 256)),  # halo 4
], ids=["default", "small"])
def test_tiled_equals_untiled(config, tiles):
    eng = engine(config)
    img = np.random.default_rng(1).random((100, 150, 3), dtype=np.float32)
    full = eng.run(img, tile=10**6)
    for tile in tiles:
        np.testing.assert_allclose(eng.run(img, tile=tile), full, atol=1e-5, rtol=0,
                                   err_msg=f"tile={tile}")


def test_tiles_smaller_than_halo():
    eng = engine(CONFIGS[1])
    img = np.random.default_rng(2).random((11, 9, 3), dtype=np.float32)
    full = eng.run(img, tile=10**6)
    for tile in (1, 2, 3, 5):
        np.testing.assert_allclose(eng.run(img, tile=tile), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(9, 40), (40, 9), (1, 33), (33, 1)])
def test_tile_between_height_and_width(shape):
    """Tiles are tile x tile, cut by the image: a tile larger than one side and
    smaller than the other (msrnet/tiling.h TileGrid), and a huge tile, give the
    untiled result; the progress count is the number of tiles."""
    eng = engine(CONFIGS[1])
    img = np.random.default_rng(4).random((*shape, 3), dtype=np.float32)
    full = eng.run(img, tile=max(shape))
    for tile in (min(shape) + 1, 16, 2**31 - 1):
        calls: list[tuple[int, int]] = []
        out = eng.run(img, tile=tile, progress=lambda d, t, calls=calls: calls.append((d, t)))
        np.testing.assert_allclose(out, full, atol=1e-5, rtol=0, err_msg=f"tile={tile}")
        n = -(-max(shape) // min(tile, max(shape)))
        assert calls == [(i, n) for i in range(1, n + 1)], (tile, calls)


def test_generic_kernels_match(monkeypatch):
    """The portable kernel build gives the same result as the dispatched one."""
    config = CONFIGS[0]
    weights = random_weights(config, 3).weights
    img = np.random.default_rng(3).random((40, 33, 3), dtype=np.float32)
    fast = _core.Engine(config.engine_dict(), weights).run(img, tile=16)
    monkeypatch.setenv("MSRNET_SIMD", "generic")
    monkeypatch.setenv("MSRNET_WINOGRAD", "0")
    generic = _core.Engine(config.engine_dict(), weights).run(img, tile=16)
    np.testing.assert_allclose(fast, generic, atol=1e-4, rtol=0)


@pytest.mark.parametrize("width", [32, 16, 48, 24])
@pytest.mark.parametrize("simd", ["generic", "native"])
def test_winograd_tiles_match_direct(monkeypatch, simd, width):
    """F(2x2), F(4x4) and the default F(6x6) Winograd convs agree with the direct conv on
    shapes whose last Winograd tiles are partial in both directions (1..5 pixels past the
    valid rectangle: the maps' bottom/right border rings), untiled and tiled; widths that
    take each GEMM register block (AVX-512: 48, 32 and 16 channels; 8-channel blocks)."""
    config = MSRNetConfig(width=width, depth=10 if width == 32 else 4)
    weights = random_weights(config, 4).weights
    if simd == "generic":
        monkeypatch.setenv("MSRNET_SIMD", "generic")
    results = {}
    for m in ("0", "2", "4", "6"):
        monkeypatch.setenv("MSRNET_WINOGRAD", m)
        eng = _core.Engine(config.engine_dict(), weights)
        for shape in ((31, 47), (25, 26)):
            img = np.random.default_rng(sum(shape)).random((*shape, 3), dtype=np.float32) * 4
            for tile in (2**31 - 1, 23):
                results[m, shape, tile] = eng.run(img, tile=tile)
    for (m, shape, tile), out in results.items():
        direct = results["0", shape, tile]
        assert np.abs(out - direct).max() <= 2e-5 * (1 + np.abs(direct).max()), (m, shape, tile)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    sys.path[:0] = {paths!r}
    from msrnet_napari import _core
    from conftest import random_weights
    from msrnet_napari.config import MSRNetConfig
    cfg = MSRNetConfig(depth=2, width=32)
    eng = _core.Engine(cfg.engine_dict(), random_weights(cfg).weights)
    img = np.random.default_rng(0).random((2048, 2048, 3), dtype=np.float32)
    eng.run(img[:64, :64].copy())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = eng.run(img, tile=256, threads=2)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"growth_kb": after - before, "finite": bool(np.isfinite(out).all())}}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kB on Linux")
def test_memory_bounded_by_tile():
    """2048^2 with tile=256: peak RSS grows by the output + per-tile scratch only.

    One untiled width-32 feature map alone would be 2048^2 * 32 * 4 B = 512 MiB
    (and PyTorch keeps all K of them for the concat); the tiled engine needs the
    48 MiB output plus about 4 maps of 266^2 x 32 floats (~36 MiB).
    """
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    paths = [here] + [p for p in sys.path if p]
    res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT.format(paths=paths)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["finite"]
    growth_mib = info["growth_kb"] / 1024
    output_mib = 2048 * 2048 * 3 * 4 / 2**20
    assert growth_mib < output_mib + 100, f"peak RSS grew by {growth_mib:.0f} MiB"
