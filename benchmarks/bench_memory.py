"""Peak memory of the whole enhance() path on uint8 RGB images (one subprocess per size).

    python benchmarks/bench_memory.py [--sizes 1024 4096 8192] [--weights W.pt] [--threads 0]

Prints a markdown table: image size, seconds, peak RSS of the process (ru_maxrss),
the part of it that is the input + output arrays themselves, and the rest
(interpreter, numpy, engine scratch, the float32 band being processed). The
engine never holds more than one band of rows in float32 and one tile of
feature maps, so "rest" stays flat as images grow.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKER = r"""
import json, resource, sys, time
import numpy as np
import msrnet_napari
size, weights, threads = int(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3])
img = np.random.default_rng(0).integers(0, 60, (size, size, 3), dtype=np.uint8)
msrnet_napari.enhance(img[:64, :64], weights=weights)  # load weights + engine once
t = time.perf_counter()
out = msrnet_napari.enhance(img, weights=weights, threads=threads)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"size": size, "seconds": dt, "peak_mib": peak,
                  "arrays_mib": (img.nbytes + out.nbytes) / 2**20}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--weights", default="", help="checkpoint (default: the bundled weights)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    rows = []
    for size in args.sizes:
        res = subprocess.run([sys.executable, "-c", WORKER, str(size), args.weights, str(args.threads)],
                             capture_output=True, text=True)
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print("| image (uint8 RGB) | seconds | peak RSS [MiB] | input+output arrays [MiB] | rest [MiB] |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | "
              f"{r['arrays_mib']:.0f} | {r['peak_mib'] - r['arrays_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
