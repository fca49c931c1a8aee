"""Where the CPU engine's time goes, per layer and per kernel stage; and its thread scaling.

    python benchmarks/profile_engine.py [--size 1024] [--threads 1] [--tile N] [--repeat 3]
    python benchmarks/profile_engine.py --timing [--sizes 512 1024 2048] [--shapes 1x2000]
        [--threads 1 2] [--repeat 3] [--tile N] [--so path/to/_core.so] [--load]

Runs the engine (default MSRNetConfig, He-normal random weights) with
``MSRNET_PROFILE=1``: cpp/engine_cpu.cpp then times every stage of every tile
(f1, f1.conv, the first f2 conv, the Winograd convs split into input transform /
GEMMs / output transform / 1x1 fuse accumulation, f3) and prints the sums to
stderr; this script runs that in a fresh interpreter and prints the run with the
least wall time as a markdown table. The timers cost a few per cent.

--timing times whole runs instead (no timers): per shape and thread count the
min / median wall seconds of --repeat runs in one process, s/MP, the CPU-seconds
of the fastest run, and whether the output is bit-identical to the first thread
count's. --so loads another build of the extension (e.g. a copy of the old one,
to compare); --load runs a busy-loop process on one core meanwhile (the "busy
machine" case of issue 14). Time idle machines only: other load skews both.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

LINE = re.compile(r"msrnet profile:\s+(.*?)\s+([0-9.]+) s\s+([0-9.]+) %$")
HEAD = re.compile(r"msrnet profile: (.*) wall ([0-9.]+) s, thread-seconds ([0-9.]+)")


def worker(size: int, threads: int, tile: int, repeat: int) -> None:
    import numpy as np

    from msrnet_napari import _core
    from msrnet_napari.config import MSRNetConfig

    config = MSRNetConfig()
    eng = _core.Engine(config.engine_dict(), _weights(config))
    img = np.random.default_rng(size).random((size, size, 3), dtype=np.float32) * 0.3
    eng.run(img[:64, :64].copy(), threads=1)  # warm-up
    for _ in range(repeat):
        eng.run(img, tile=tile or None, threads=threads)


def _weights(config):
    import numpy as np

    from msrnet_napari.config import parameter_shapes

    rng = np.random.default_rng(0)
    return {k: (rng.standard_normal(s) * (np.sqrt(2 / np.prod(s[1:])) if len(s) > 1
                else 0.01)).astype(np.float32) for k, s in parameter_shapes(config).items()}


def timing(a) -> None:
    import importlib.util
    import time

    import numpy as np

    from msrnet_napari.config import MSRNetConfig

    if a.so:
        spec = importlib.util.spec_from_file_location("msrnet_napari._core", a.so)
        core = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(core)
    else:
        from msrnet_napari import _core as core
    config = MSRNetConfig()
    eng = core.Engine(config.engine_dict(), _weights(config))
    tile = a.tile or getattr(eng, "default_tile", 256)  # an old build has no default_tile
    eng.run(np.zeros((64, 64, 3), np.float32), tile=tile, threads=1)  # warm-up
    shapes = [(s, s) for s in a.sizes] + [tuple(int(v) for v in s.split("x")) for s in a.shapes]
    for h, w in shapes:
        img = np.random.default_rng(h * 7 + w).random((h, w, 3), dtype=np.float32) * 0.3
        ref = None
        for threads in a.threads:
            walls, cpus = [], []
            for _ in range(a.repeat):
                c0, t0 = time.process_time(), time.perf_counter()
                out = eng.run(img, tile=tile, threads=threads)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            ref = out if ref is None else ref
            best = min(walls)
            print(f"{h}x{w} tile={tile} threads={threads}: min {best:.4f}s "
                  f"med {sorted(walls)[len(walls) // 2]:.4f}s {best / (h * w / 1e6):.3f} s/MP "
                  f"cpu {cpus[walls.index(best)]:.3f}s same={bool(np.array_equal(out, ref))}",
                  flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--tile", type=int, default=0, help="0 = the engine's default_tile")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timing", action="store_true", help="time whole runs (no profile)")
    p.add_argument("--sizes", type=int, nargs="*", default=[512, 1024, 2048])
    p.add_argument("--shapes", nargs="*", default=[], help="HxW, e.g. 1x2000")
    p.add_argument("--so", default="", help="--timing: this build of _core instead")
    p.add_argument("--load", action="store_true", help="--timing: keep one core busy")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.timing:
        if isinstance(a.threads, int):
            a.threads = [a.threads]
        loader = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.load else None
        try:
            timing(a)
        finally:
            if loader is not None:
                loader.kill()
                loader.wait()
        return 0
    if a.worker:
        worker(a.size, a.threads[0], a.tile, a.repeat)
        return 0
    env = dict(os.environ, MSRNET_PROFILE="1")
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--size",
                          str(a.size), "--threads", str(a.threads[0]), "--tile", str(a.tile),
                          "--repeat", str(a.repeat)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        return res.returncode
    runs: list[tuple[float, str, float, list[tuple[str, float, float]]]] = []
    for line in res.stderr.splitlines():
        head = HEAD.match(line)
        if head:
            runs.append((float(head.group(2)), head.group(1), float(head.group(3)), []))
        elif (row := LINE.match(line)) and runs:
            runs[-1][3].append((row.group(1), float(row.group(2)), float(row.group(3))))
    runs = [r for r in runs if r[1].startswith(f"{a.size}x{a.size}")]
    if not runs:
        print("no profile lines (is MSRNET_PROFILE supported by this build?)", file=sys.stderr)
        return 1
    wall, what, cpu, rows = min(runs)
    mp = a.size * a.size / 1e6
    print(f"{what} wall {wall:.3f} s ({wall / mp:.3f} s/MP), thread-seconds {cpu:.3f}\n")
    print("| stage | thread-s | % | thread-s / MP |")
    print("|---|---:|---:|---:|")
    for name, sec, pct in rows:
        print(f"| {name.strip()} | {sec:.4f} | {pct:.1f} | {sec / mp:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
