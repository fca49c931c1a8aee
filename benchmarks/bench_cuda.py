"""Benchmark: msrnet CUDA engine vs PyTorch CUDA eager on identical weights.

    PYTHONPATH=src python benchmarks/bench_cuda.py [--sizes 1024 2048 4096 8192]
        [--repeats 3] [--tile 2048] [--json out.json]

Times are the median of ``--repeats`` runs after one warm-up, with
torch.cuda.synchronize() around every torch run. "ours" is host -> host
(numpy in, numpy out: includes both PCIe copies); torch is shown device-resident
(input already on the GPU, output left there) and host -> host. fp32 rows run
with TF32 disabled (cudnn and matmul); the TF32 rows (ours: ``precision="tf32"``, the
tensor-core kernel; torch: cudnn + matmul TF32) are labelled. Sizes above
``--torch-max`` (default 4096) run ours only (torch eager would need
> 150 GB for 8192^2 because it keeps all K feature maps plus their concat).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from msrnet_napari import _core  # noqa: E402
from msrnet_napari.config import MSRNetConfig  # noqa: E402


def median_time(fn, repeats: int, sync=None) -> tuple[float, object]:
    out = fn()  # warm-up (allocations, cudnn autotune)
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile", type=int, default=2048, help="tile size for our engine")
    ap.add_argument("--small-tile", type=int, default=256,
                    help="also time ours with this tile (the Python API default); 0 = skip")
    ap.add_argument("--torch-max", type=int, default=4096, help="largest size run with torch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)

    if not getattr(_core, "has_cuda", False) or _core.cuda_device_count() < 1:
        print("msrnet_napari._core has no CUDA engine or no GPU is visible; nothing to do")
        return 1

    try:
        import torch

        from msrnet_napari.training.model import MSRNet, init_weights
        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False

    config = MSRNetConfig()
    if have_torch:
        model = init_weights(MSRNet(config), seed=args.seed).eval()
        weights = {k: v.detach().cpu().numpy().astype(np.float32)
                   for k, v in model.state_dict().items()}
    else:  # numpy fallback so ours can still be timed
        from msrnet_napari.config import parameter_shapes
        rng = np.random.default_rng(args.seed)
        weights = {k: (rng.standard_normal(s) * (0.01 if k.endswith("bias") else
                       (2.0 / max(1, int(np.prod(s[1:])))) ** 0.5)).astype(np.float32)
                   for k, s in parameter_shapes(config).items()}

    ours = _core.CudaEngine(config.engine_dict(), weights)
    ours_tf32 = _core.CudaEngine(config.engine_dict(), weights, precision="tf32")
    device_name = "?"
    if have_torch:
        device_name = torch.cuda.get_device_name(0)
        model = model.cuda()
        torch.backends.cudnn.benchmark = True
    print(f"# msrnet CUDA engine vs PyTorch eager on {device_name}")
    if have_torch:
        print(f"torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}, "
              f"config {config.engine_dict()}, {config.flops_per_pixel() / 1e3:.0f} kFLOP/px")
    print()
    print("| size | method | median s | Mpx/s | TFLOP/s | time / ours | max abs diff vs ours |")
    print("|---|---|---|---|---|---|---|")

    rows = []

    def row(size, method, seconds, diff, ref_seconds):
        mpx = size * size / seconds / 1e6
        tflops = size * size * config.flops_per_pixel() / seconds / 1e12
        rel = f"{seconds / ref_seconds:.2f}x" if ref_seconds else "1.00x"
        d = "-" if diff is None else f"{diff:.2e}"
        print(f"| {size}^2 | {method} | {seconds:.4f} | {mpx:.1f} | {tflops:.2f} | {rel} | {d} |",
              flush=True)
        rows.append(dict(size=size, method=method, seconds=seconds, mpx_per_s=mpx,
                         tflops=tflops, max_abs_diff=diff, device=device_name))

    for size in args.sizes:
        image = np.random.default_rng(size).random((size, size, 3), dtype=np.float32)
        tile = min(args.tile, size) if args.tile > 0 else size
        try:
            t_ours, y_ours = median_time(lambda: ours.run(image, tile=tile), args.repeats)  # noqa: B023
        except Exception as exc:  # e.g. out of memory
            print(f"| {size}^2 | ours CUDA tile={tile} | failed: {exc} | | | | |", flush=True)
            continue
        row(size, f"ours CUDA fp32, host->host, tile={tile}", t_ours, None, None)
        if args.small_tile and args.small_tile < size:
            t_small, y_small = median_time(lambda: ours.run(image, tile=args.small_tile), args.repeats)  # noqa: B023
            row(size, f"ours CUDA fp32, host->host, tile={args.small_tile}", t_small,
                float(np.abs(y_small - y_ours).max()), t_ours)
            del y_small
        if ours_tf32.precision == "tf32":  # tensor cores (compute capability >= 8.0)
            t_tc, y_tc = median_time(lambda: ours_tf32.run(image, tile=tile), args.repeats)  # noqa: B023
            row(size, f"ours CUDA TF32 tensor cores, host->host, tile={tile}", t_tc,
                float(np.abs(y_tc - y_ours).max()), t_ours)
            del y_tc

        if not have_torch or size > args.torch_max:
            continue
        sync = torch.cuda.synchronize
        try:
            x_host = torch.from_numpy(image).permute(2, 0, 1)[None]
            variants = [
                ("torch eager fp32 NCHW, device-resident", torch.contiguous_format, False, False,
                 False),
                ("torch eager fp32 channels_last, device-resident", torch.channels_last, False,
                 False, False),
                ("torch eager fp32 NCHW, host->host", torch.contiguous_format, False, True, False),
                ("torch eager TF32 (cudnn+matmul) NCHW, device-resident", torch.contiguous_format,
                 True, False, False),
                ("torch eager TF32 channels_last, device-resident", torch.channels_last, True,
                 False, False),
                ("torch.compile TF32 channels_last, device-resident", torch.channels_last, True,
                 False, True),
            ]
            for name, fmt, tf32, host, compiled in variants:
                torch.backends.cudnn.allow_tf32 = tf32
                torch.backends.cuda.matmul.allow_tf32 = tf32
                m = model.to(memory_format=fmt)
                if compiled:
                    try:
                        m = torch.compile(m)
                    except Exception as exc:  # no triton / unsupported: say so, go on
                        print(f"| {size}^2 | {name} | not run: {type(exc).__name__} | | | | |")
                        continue
                x_dev = x_host.cuda().contiguous(memory_format=fmt)

                if host:
                    def fn():
                        with torch.inference_mode():
                            xd = torch.from_numpy(image).cuda().permute(2, 0, 1)[None].contiguous()  # noqa: B023
                            y = m(xd)  # noqa: B023
                            return y[0].permute(1, 2, 0).contiguous().cpu().numpy()
                else:
                    def fn():
                        with torch.inference_mode():
                            return m(x_dev)  # noqa: B023, F821

                t, y = median_time(fn, args.repeats, sync)
                if not host:
                    y = y[0].permute(1, 2, 0).contiguous().cpu().numpy()
                row(size, name, t, float(np.abs(y - y_ours).max()), t_ours)
                del x_dev, y
                torch.cuda.empty_cache()
        except Exception as exc:  # e.g. torch out of memory at the largest size
            print(f"| {size}^2 | torch | failed: {type(exc).__name__}: {str(exc)[:80]} | | | | |",
                  flush=True)
            torch.cuda.empty_cache()
        finally:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            model = model.to(memory_format=torch.contiguous_format)

    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
