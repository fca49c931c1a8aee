"""Benchmark the C++ CPU engine against PyTorch eager (NCHW and channels_last).

    python benchmarks/bench_engine.py [--sizes 512 1024 2048 4096 8192]
        [--threads 2] [--repeat 3] [--skip-torch-above 2048] [--tile 256]

Every (size, backend) runs in a fresh subprocess, so ``peak RSS`` is that
backend's own peak (it includes the interpreter and, for torch, the torch
import).  All backends use the same random weights (``init_weights(seed=0)``, passed
as .npz so the engine's worker never imports torch) and the same input; the
outputs are compared with PyTorch NCHW.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

BACKENDS = ("ours", "torch-nchw", "torch-cl")


def make_weights(path: str) -> bool:
    """Save the benchmark weights (init_weights(seed=0) when torch is there) to .npz."""
    from msrnet_napari.config import MSRNetConfig, parameter_shapes

    config = MSRNetConfig()
    try:
        import torch

        from msrnet_napari.training.model import MSRNet, init_weights
    except ImportError:  # ours only: He-normal numpy weights
        rng = np.random.default_rng(0)
        weights = {k: (rng.standard_normal(s) * (np.sqrt(2 / np.prod(s[1:])) if len(s) > 1
                       else 0.01)).astype(np.float32)
                   for k, s in parameter_shapes(config).items()}
        np.savez(path, **weights)
        return False
    torch.manual_seed(0)
    model = init_weights(MSRNet(config), seed=0)
    np.savez(path, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    return True


def _image(size: int) -> np.ndarray:
    return np.random.default_rng(size).random((size, size, 3), dtype=np.float32) * 0.3


def worker(backend: str, size: int, threads: int, repeat: int, tile: int, out_path: str,
           weights_path: str) -> None:
    import resource

    from msrnet_napari.config import MSRNetConfig

    config = MSRNetConfig()
    with np.load(weights_path) as f:
        weights = {k: f[k] for k in f.files}
    img = _image(size)
    times = []
    if backend == "ours":
        from msrnet_napari import _core

        eng = _core.Engine(config.engine_dict(), weights)
        eng.run(img[:64, :64].copy(), threads=threads)  # warm-up
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = eng.run(img, tile=tile, threads=threads)
            times.append(time.perf_counter() - t0)
        extra = {"simd": _core.simd_level()}
    else:
        import torch

        from msrnet_napari.training.model import MSRNet

        torch.set_num_threads(threads)
        model = MSRNet(config).eval()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        fmt = torch.channels_last if backend == "torch-cl" else torch.contiguous_format
        model = model.to(memory_format=fmt)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous(memory_format=fmt)
        with torch.inference_mode():
            model(x[:, :, :64, :64].contiguous(memory_format=fmt))  # warm-up
            for _ in range(repeat):
                t0 = time.perf_counter()
                y = model(x)
                times.append(time.perf_counter() - t0)
            out = y[0].permute(1, 2, 0).contiguous().numpy()
            del y
        extra = {"torch": torch.__version__}
    if out_path:
        np.save(out_path, out)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"time": min(times), "rss_mib": rss_mib, **extra}))


def _sub(*argv: str) -> dict:
    """Run this script in a fresh interpreter; returns its last stdout line as JSON.

    The parent stays small (numpy only): Linux keeps ru_maxrss across fork+exec,
    so a big parent would inflate every worker's peak RSS.
    """
    res = subprocess.run([sys.executable, os.path.abspath(__file__), *argv],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_worker(backend, size, args, out_path, weights_path):
    return _sub("--worker", backend, "--sizes", str(size), "--threads", str(args.threads),
                "--repeat", str(args.repeat if size <= 2048 else 1), "--tile", str(args.tile),
                "--out", out_path, "--weights", weights_path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=3, help="timed runs (min is reported); 1 above 2048^2")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--skip-torch-above", type=int, default=2048,
                   help="no PyTorch runs above this edge (torch needs ~16 GB at 4096^2)")
    p.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    p.add_argument("--weights", default="", help=argparse.SUPPRESS)
    p.add_argument("--make-weights", default="", help=argparse.SUPPRESS)
    p.add_argument("--diff", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.make_weights:
        print(json.dumps({"torch": make_weights(args.make_weights)}))
        return
    if args.diff:
        a, b = (np.load(f, mmap_mode="r") for f in args.diff)
        print(json.dumps({"diff": float(np.abs(a - b).max())}))
        return
    if args.worker:
        worker(args.worker, args.sizes[0], args.threads, args.repeat, args.tile, args.out,
               args.weights)
        return

    from msrnet_napari.config import MSRNetConfig

    flops = MSRNetConfig().flops_per_pixel()
    print(f"MSR-net default config, {flops / 1e3:.1f} kFLOP/pixel, threads={args.threads}, "
          f"tile={args.tile}, min of {args.repeat} runs (1 above 2048^2)\n")
    print("| size | backend | time [s] | s/MP | GFLOP/s | peak RSS [MiB] | ours speed-up "
          "| max abs diff vs torch-nchw |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        weights_path = os.path.join(tmp, "weights.npz")
        have_torch = _sub("--make-weights", weights_path).get("torch", False)
        for size in args.sizes:
            mp = size * size / 1e6
            backends = BACKENDS if have_torch and size <= args.skip_torch_above else ("ours",)
            results, outputs = {}, {}
            for b in backends:
                path = os.path.join(tmp, f"{b}.npy")
                results[b] = run_worker(b, size, args, path if len(backends) > 1 else "", weights_path)
                outputs[b] = path
            ref = outputs["torch-nchw"] if "time" in results.get("torch-nchw", {}) else None
            for b in backends:
                r = results[b]
                if "error" in r:
                    print(f"| {size}^2 | {b} | failed: {r['error'][:60]} | | | | | |")
                    continue
                t = r["time"]
                name = b + (f" ({r['simd']})" if "simd" in r else "")
                speed = ("-" if b == "ours" or "time" not in results["ours"]
                         else f"{t / results['ours']['time']:.2f}x")
                diff = "-"
                if ref is not None and b != "torch-nchw":
                    d = _sub("--diff", outputs[b], ref)
                    diff = f"{d['diff']:.2e}" if "diff" in d else "?"
                print(f"| {size}^2 | {name} | {t:.3f} | {t / mp:.3f} | "
                      f"{flops * size * size / t / 1e9:.1f} | {r['rss_mib']:.0f} | {speed} | {diff} |",
                      flush=True)
            for path in outputs.values():
                if os.path.exists(path):
                    os.remove(path)


if __name__ == "__main__":
    main()
