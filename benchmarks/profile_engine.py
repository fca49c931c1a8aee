"""Where the CPU engine's time goes, per layer and per kernel stage.

    python benchmarks/profile_engine.py [--size 1024] [--threads 1] [--tile N] [--repeat 3]

Runs the engine (default MSRNetConfig, He-normal random weights) with
``MSRNET_PROFILE=1``: cpp/engine_cpu.cpp then times every stage of every tile
(f1, f1.conv, the first f2 conv, the Winograd convs split into input transform /
GEMMs / output transform / 1x1 fuse accumulation, f3) and prints the sums to
stderr; this script runs that in a fresh interpreter and prints the run with the
least wall time as a markdown table. The timers cost a few per cent; time whole
runs with benchmarks/bench_engine.py.
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
    from msrnet_napari.config import MSRNetConfig, parameter_shapes

    config = MSRNetConfig()
    rng = np.random.default_rng(0)
    weights = {k: (rng.standard_normal(s) * (np.sqrt(2 / np.prod(s[1:])) if len(s) > 1
                   else 0.01)).astype(np.float32) for k, s in parameter_shapes(config).items()}
    eng = _core.Engine(config.engine_dict(), weights)
    img = np.random.default_rng(size).random((size, size, 3), dtype=np.float32) * 0.3
    eng.run(img[:64, :64].copy(), threads=1)  # warm-up
    for _ in range(repeat):
        eng.run(img, tile=tile or None, threads=threads)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tile", type=int, default=0, help="0 = the engine's default_tile")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.size, a.threads, a.tile, a.repeat)
        return 0
    env = dict(os.environ, MSRNET_PROFILE="1")
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--size",
                          str(a.size), "--threads", str(a.threads), "--tile", str(a.tile),
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
