"""A/B timing of two builds of the compiled engine, interleaved (A B B A A B ...).

    python benchmarks/ab_engine.py OLD_core.so NEW_core.so [--size 512] [--rounds 15]
        [--threads 1] [--tiles 0 0] [--envs ENV_A ENV_B]

Each build lives in its own worker process (one extension module per process), both
get the same random weights (``profile_engine._weights``) and image and a warm-up run;
then the timed runs alternate, so drifts of a shared machine hit both alike. Prints
min and median per build, their ratios B/A and the largest output difference (0 when
the builds compute the same bits). Copy the old build's ``_core*.so`` aside before
rebuilding. ``--tiles`` gives each build its tile (0 = its default); ``--envs`` sets
one environment variable per worker before its build loads, e.g. the same build twice
with ``--envs MSRNET_WINOGRAD=4 MSRNET_WINOGRAD=6`` ("-" = none).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np


def _serve(so: str, tile: int, env: str, conn) -> None:
    if env != "-":
        key, _, value = env.partition("=")
        os.environ[key] = value
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from profile_engine import _weights

    from msrnet_napari.config import MSRNetConfig

    spec = importlib.util.spec_from_file_location("msrnet_napari._core", so)
    core = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(core)
    config = MSRNetConfig()
    eng = core.Engine(config.engine_dict(), _weights(config))
    while (msg := conn.recv()) is not None:
        size, threads = msg
        img = np.random.default_rng(size).random((size, size, 3), dtype=np.float32) * 0.3
        t0 = time.perf_counter()
        out = eng.run(img, threads=threads, tile=tile or None)
        conn.send((time.perf_counter() - t0, out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiles", type=int, nargs=2, default=(0, 0), metavar=("TILE_A", "TILE_B"))
    p.add_argument("--envs", nargs=2, default=("-", "-"), metavar=("ENV_A", "ENV_B"),
                   help="KEY=VALUE set in worker A / B before its build loads ('-' = none)")
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    workers = []
    for so, tile, env in zip((args.a, args.b), args.tiles, args.envs):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(so, tile, env, child))
        proc.start()
        workers.append((proc, parent))
    for _, conn in workers:  # warm-up
        conn.send((args.size, args.threads))
        conn.recv()
    times: list[list[float]] = [[], []]
    outs = [None, None]
    for r in range(args.rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            workers[i][1].send((args.size, args.threads))
            dt, outs[i] = workers[i][1].recv()
            times[i].append(dt)
    for proc, conn in workers:
        conn.send(None)
        proc.join()
    med = [sorted(t)[len(t) // 2] for t in times]
    for name, t, m in zip("AB", times, med):
        print(f"{name} {args.size}^2 threads {args.threads}: min {min(t):.4f} s, median {m:.4f} s")
    print(f"B/A min {min(times[1]) / min(times[0]):.3f}, median {med[1] / med[0]:.3f}, "
          f"max output difference {float(np.abs(outs[0] - outs[1]).max()):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
