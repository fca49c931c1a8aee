"""Benchmark the C++ CPU engine against PyTorch eager, ONNX Runtime and OpenVINO.

    python benchmarks/bench_engine.py [--sizes 512 1024 2048 4096 8192]
        [--threads 1 2] [--repeat 3] [--backends ours torch-nchw ...]
        [--skip-torch-above 2048] [--skip-runtimes-above 2048] [--persist-upto 1024]
        [--tile 0 (= the engine's default tile)]

Backends: ``ours`` (the engine, ``_core.Engine.run``), ``torch-nchw`` and ``torch-cl``
(PyTorch eager, contiguous and channels_last), ``onnxruntime`` (CPU execution provider,
ORT_ENABLE_ALL, intra-op threads = threads, one inter-op thread, sequential execution) and
``openvino`` (CPU, PERFORMANCE_HINT=LATENCY, INFERENCE_NUM_THREADS=threads, f32 inference
precision).  The last two run the reference model exported once per run to ONNX
(``torch.onnx.export``, dynamic H/W); they need the ``bench`` extra
(``pip install msrnet-napari[bench]``) and are skipped with a note when their package (or
torch, for the export) is missing.

All backends use the same random weights (``init_weights(seed=0)``, passed to the workers
as .npz so the engine's worker never imports torch; the ONNX file is exported from the same
weights) and the same input.  Every (size, backend) runs in its own fresh process, so
``peak RSS`` is that backend's own peak (it includes the interpreter and the runtime's
import).  Each worker makes one untimed warm-up call at the full size (a 64^2 crop above
2048^2), then the timed calls are interleaved: repeat 1 of every backend, then repeat 2 of
every backend, ...  Up to ``--persist-upto`` the workers stay alive between their timed
calls; above it every timed call gets a fresh process (so only one backend's memory is
resident at a time), which also repeats the warm-up.

Reported per (threads, size, backend): min and median wall seconds, the median process
CPU-seconds of the timed call (all threads; ``getrusage`` user + system), s/MP and
CPU-s/MP, GFLOP/s (from the min), peak RSS, the speed-up of ``ours`` (backend min / ours
min) and the max abs difference of the output from PyTorch NCHW (flagged above 1e-4).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BACKENDS = ("ours", "torch-nchw", "torch-cl", "onnxruntime", "openvino")
TORCH_BACKENDS = ("torch-nchw", "torch-cl")
RUNTIMES = ("onnxruntime", "openvino")  # backend name = the module it needs
REFERENCE = "torch-nchw"
DIFF_LIMIT = 1e-4
MAX_REPEATED = 2048  # above this edge: one timed run and a small warm-up
MARK = "@@bench "  # prefix of the worker's protocol lines (libraries may print to stdout)


def make_weights(path: str, onnx_path: str = "") -> dict:
    """Save the benchmark weights (init_weights(seed=0) when torch is there) to .npz and,
    if ``onnx_path``, export the reference model with them to ONNX.

    Returns ``{"torch": bool, "onnx": "" | why the export failed}``.
    """
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
        return {"torch": False, "onnx": "needs torch to export the reference model"}
    torch.manual_seed(0)
    model = init_weights(MSRNet(config), seed=0).eval()
    np.savez(path, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    return {"torch": True, "onnx": export_onnx(model, onnx_path) if onnx_path else ""}


def export_onnx(model, path: str) -> str:
    """Export ``model`` (NCHW float, N = 1) to ONNX with dynamic H and W; "" or the error.

    The TorchScript-based exporter (``dynamo=False``) needs no extra package; the
    torch.export-based one (needs onnxscript) is the fallback if it fails.
    """
    import torch

    x = torch.rand(1, 3, 64, 64)
    kw = dict(input_names=["x"], output_names=["y"], opset_version=17,
              dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}})
    errors = []
    for dynamo in (False, True):
        if dynamo and importlib.util.find_spec("onnxscript") is None:
            errors.append("dynamo=True: onnxscript not installed")
            break
        try:
            with torch.inference_mode(False), torch.no_grad():
                torch.onnx.export(model, (x,), path, dynamo=dynamo, **kw)
            return ""
        except Exception as e:  # noqa: BLE001 - reported in the table's notes
            errors.append(f"dynamo={dynamo}: {type(e).__name__}: {str(e)[:120]}")
    return "ONNX export failed (" + "; ".join(errors) + ")"


def _image(size: int) -> np.ndarray:
    return np.random.default_rng(size).random((size, size, 3), dtype=np.float32) * 0.3


def schedule(backends, repeat: int) -> list[tuple[int, str]]:
    """The interleaved order of the timed calls: (repeat index, backend), round-robin."""
    return [(r, b) for r in range(repeat) for b in backends]


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it: the parent stays small)."""
    return importlib.util.find_spec(module) is not None


def plan(size: int, backends, *, have_torch: bool, onnx_error: str, have,
         skip_torch_above: int, skip_runtimes_above: int) -> tuple[list[str], dict[str, str]]:
    """Which of ``backends`` run at ``size``, and a note for each one that does not.

    ``have(module) -> bool`` says whether a package is installed.
    """
    run, skipped = [], {}
    for b in backends:
        if b in TORCH_BACKENDS:
            if not have_torch:
                skipped[b] = "torch not installed"
            elif size > skip_torch_above:
                skipped[b] = f"above --skip-torch-above {skip_torch_above}"
        elif b in RUNTIMES:
            if not have(b):
                skipped[b] = f"{b} not installed (pip install msrnet-napari[bench])"
            elif onnx_error:
                skipped[b] = onnx_error
            elif size > skip_runtimes_above:
                skipped[b] = f"above --skip-runtimes-above {skip_runtimes_above}"
        if b not in skipped:
            run.append(b)
    return run, skipped


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _make_runner(backend: str, config, weights: dict, onnx_path: str, threads: int, tile: int):
    """(prepare(img) -> input, call(input) -> raw output, to_hwc(raw) -> H x W x 3 ndarray,
    extra info).  Only ``call`` is timed: the layout conversions are not."""
    if backend == "ours":
        from msrnet_napari import _core

        eng = _core.Engine(config.engine_dict(), weights)
        return (lambda img: img, lambda img: eng.run(img, tile=tile or None, threads=threads),
                lambda y: y,
                {"simd": _core.simd_level()})
    if backend in TORCH_BACKENDS:
        import torch

        from msrnet_napari.training.model import MSRNet

        torch.set_num_threads(threads)
        model = MSRNet(config).eval()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        fmt = torch.channels_last if backend == "torch-cl" else torch.contiguous_format
        model = model.to(memory_format=fmt)

        def call(x):
            with torch.inference_mode():
                return model(x)

        return (lambda img: torch.from_numpy(img).permute(2, 0, 1)[None].contiguous(
                    memory_format=fmt), call, lambda y: y[0].permute(1, 2, 0).contiguous().numpy(),
                {"versions": {"torch": torch.__version__}})
    if backend == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return (_nchw, lambda x: sess.run(None, {name: x})[0],
                lambda y: np.ascontiguousarray(y[0].transpose(1, 2, 0)),
                {"versions": {"onnxruntime": ort.__version__}})
    if backend == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(onnx_path), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32",  # no bf16 on CPUs that have it: same accuracy
        })
        request = compiled.create_infer_request()

        def call(x):
            request.infer({0: x})
            return request.get_output_tensor(0).data

        return (_nchw, call, lambda y: np.ascontiguousarray(y[0].transpose(1, 2, 0)),
                {"versions": {"openvino": ov.__version__.split("-")[0]}})
    raise ValueError(f"unknown backend {backend!r}")


def _nchw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def _emit(obj: dict) -> None:
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker(backend: str, size: int, threads: int, tile: int, weights_path: str,
           onnx_path: str, commands=None) -> None:
    """One backend in this process: warm up, answer "run" (one timed call) and
    "end [PATH]" (save the last output to PATH, report peak RSS, exit) from ``commands``
    (stdin by default), one protocol line each on stdout."""
    import resource

    from msrnet_napari.config import MSRNetConfig

    config = MSRNetConfig()
    with np.load(weights_path) as f:
        weights = {k: f[k] for k in f.files}
    img = _image(size)
    prepare, call, to_hwc, extra = _make_runner(backend, config, weights, onnx_path, threads,
                                                tile)
    x = prepare(img)
    call(x if size <= MAX_REPEATED else prepare(img[:64, :64].copy()))  # warm-up
    _emit({"ready": True, **extra})
    out = None
    for line in (sys.stdin if commands is None else commands):
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "run":
            out = None  # the previous output is not kept alive during the call
            c0, t0 = _cpu_seconds(), time.perf_counter()
            out = call(x)
            t, c = time.perf_counter() - t0, _cpu_seconds() - c0
            _emit({"time": t, "cpu": c})
        elif cmd == "end":
            if arg and out is not None:
                np.save(arg, to_hwc(out))
            break
    _emit({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


class WorkerError(RuntimeError):
    pass


class Worker:
    """A worker process for one (backend, size, threads), driven over its stdin/stdout."""

    def __init__(self, backend: str, size: int, threads: int, args, weights_path: str,
                 onnx_path: str, err_path: str) -> None:
        self.backend = backend
        self.err_path = err_path
        with open(err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", backend, "--sizes",
                 str(size), "--threads", str(threads), "--tile", str(args.tile),
                 "--weights", weights_path, "--onnx", onnx_path],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.kill()
        with open(self.err_path) as f:
            lines = f.read().strip().splitlines()
        raise WorkerError((lines or [f"exit status {self.proc.returncode}"])[-1])

    def _send(self, cmd: str) -> dict:
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # _read reports why it died
        return self._read()

    def run(self) -> dict:
        return self._send("run")

    def end(self, out_path: str = "") -> float:
        rss = self._send(f"end {out_path}".strip())["rss_mib"]
        self.close()
        return rss

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.close()

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except BrokenPipeError:
                pass
        self.proc.wait()


def measure(size: int, threads: int, backends, args, weights_path: str, onnx_path: str,
            tmp: str) -> tuple[dict, dict]:
    """Interleaved timed runs of ``backends``; (results per backend, output .npy paths)."""
    repeat = args.repeat if size <= MAX_REPEATED else 1
    persistent = size <= args.persist_upto
    res = {b: {"times": [], "cpu": [], "rss_mib": 0.0} for b in backends}
    outputs = {b: os.path.join(tmp, f"{b}.npy") for b in backends}
    save = len(backends) > 1
    live: dict[str, Worker] = {}

    def start(b: str) -> Worker:
        w = Worker(b, size, threads, args, weights_path, onnx_path, os.path.join(tmp, f"{b}.err"))
        w.info.pop("ready", None)
        res[b].update(w.info)
        return w

    def fail(b: str, e: Exception) -> None:
        res[b]["error"] = str(e)
        w = live.pop(b, None)
        if w is not None:
            w.kill()

    try:
        if persistent:
            for b in backends:  # one at a time: no warm-up runs beside another
                try:
                    live[b] = start(b)
                except WorkerError as e:
                    fail(b, e)
        for r, b in schedule(backends, repeat):
            if "error" in res[b]:
                continue
            try:
                w = live[b] if persistent else start(b)
                if not persistent:
                    live[b] = w
                m = w.run()
                res[b]["times"].append(m["time"])
                res[b]["cpu"].append(m["cpu"])
                if not persistent:
                    last = r == repeat - 1
                    res[b]["rss_mib"] = max(res[b]["rss_mib"],
                                            live.pop(b).end(outputs[b] if save and last else ""))
            except WorkerError as e:
                fail(b, e)
        for b, w in list(live.items()):
            try:
                res[b]["rss_mib"] = max(res[b]["rss_mib"], w.end(outputs[b] if save else ""))
            except WorkerError as e:
                fail(b, e)
            live.pop(b, None)
    finally:
        for w in live.values():
            w.kill()
    return res, outputs


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


def format_diff(d: float | None) -> str:
    if d is None:
        return "?"
    return f"{d:.2e}" + (f" **> {DIFF_LIMIT:g}**" if not d <= DIFF_LIMIT else "")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    p.add_argument("--threads", type=int, nargs="+",
                   default=sorted({1, os.cpu_count() or 1}), help="one table block each")
    p.add_argument("--repeat", type=int, default=3,
                   help="interleaved timed runs per backend (min and median); 1 above 2048^2")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--tile", type=int, default=0,
                   help="the engine's tile edge (0 = its own default, Engine.default_tile)")
    p.add_argument("--skip-torch-above", type=int, default=2048,
                   help="no PyTorch runs above this edge (torch needs ~16 GB at 2048^2)")
    p.add_argument("--skip-runtimes-above", type=int, default=2048,
                   help="no ONNX Runtime / OpenVINO runs above this edge")
    p.add_argument("--persist-upto", type=int, default=1024,
                   help="up to this edge a worker serves all its timed runs; above, a fresh "
                        "process per timed run (one backend resident at a time)")
    p.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--weights", default="", help=argparse.SUPPRESS)
    p.add_argument("--onnx", default="", help=argparse.SUPPRESS)
    p.add_argument("--make-weights", default="", help=argparse.SUPPRESS)
    p.add_argument("--diff", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.make_weights:
        print(json.dumps(make_weights(args.make_weights, args.onnx)))
        return
    if args.diff:
        a, b = (np.load(f, mmap_mode="r") for f in args.diff)
        print(json.dumps({"diff": float(np.abs(a - b).max())}))
        return
    if args.worker:
        worker(args.worker, args.sizes[0], args.threads[0], args.tile, args.weights, args.onnx)
        return

    from msrnet_napari.config import MSRNetConfig

    flops = MSRNetConfig().flops_per_pixel()
    threads_list = list(dict.fromkeys(args.threads))
    backends = list(dict.fromkeys(args.backends))
    print(f"MSR-net default config, {flops / 1e3:.1f} kFLOP/pixel, threads={threads_list}, "
          f"tile={args.tile or 'engine default'}; min and median of {args.repeat} interleaved runs per backend "
          f"(1 above {MAX_REPEATED}^2); CPU-s: process CPU time of the timed call, median\n")
    notes: dict[str, str] = {}
    versions: dict[str, str] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights_path = os.path.join(tmp, "weights.npz")
        onnx_path = os.path.join(tmp, "msrnet.onnx")
        want_onnx = any(b in RUNTIMES and installed(b) for b in backends)
        made = _sub("--make-weights", weights_path, "--onnx", onnx_path if want_onnx else "")
        if "error" in made:
            raise SystemExit(f"making the weights failed: {made['error']}")
        for threads in threads_list:
            for size in args.sizes:
                run, skipped = plan(size, backends, have_torch=made["torch"],
                                    onnx_error=made["onnx"], have=installed,
                                    skip_torch_above=args.skip_torch_above,
                                    skip_runtimes_above=args.skip_runtimes_above)
                for b, why in skipped.items():
                    notes.setdefault(f"{b}: {why}", "")
                if not run:
                    continue
                res, outputs = measure(size, threads, run, args, weights_path,
                                       onnx_path if not made["onnx"] else "", tmp)
                rows.extend(_rows(size, threads, run, res, outputs, flops))
                for r in res.values():
                    versions.update(r.get("versions", {}))
                for path in outputs.values():
                    if os.path.exists(path):
                        os.remove(path)
    if notes:
        print("Skipped: " + "; ".join(notes) + "\n")
    print("| threads | size | backend | min [s] | median [s] | CPU-s | s/MP | CPU-s/MP | GFLOP/s "
          "| peak RSS [MiB] | ours speed-up | max abs diff vs torch-nchw |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    if versions:
        print("\n" + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))


def _rows(size: int, threads: int, run, res: dict, outputs: dict, flops: float) -> list[str]:
    mp = size * size / 1e6
    ok = {b for b in run if res[b]["times"] and "error" not in res[b]}
    ref = outputs[REFERENCE] if REFERENCE in ok and len(run) > 1 else None
    ours = min(res["ours"]["times"]) if "ours" in ok else None
    rows = []
    for b in run:
        r = res[b]
        if b not in ok:
            rows.append(f"| {threads} | {size}^2 | {b} | failed: {r.get('error', '?')[:60]} "
                        "| | | | | | | | |")
            continue
        t, med, cpu = min(r["times"]), statistics.median(r["times"]), statistics.median(r["cpu"])
        name = b + (f" ({r['simd']})" if "simd" in r else "")
        speed = "-" if b == "ours" or ours is None else f"{t / ours:.2f}x"
        diff = "-"
        if ref is not None and b != REFERENCE:
            diff = format_diff(_sub("--diff", outputs[b], ref).get("diff"))
        rows.append(f"| {threads} | {size}^2 | {name} | {t:.3f} | {med:.3f} | {cpu:.3f} | "
                    f"{t / mp:.3f} | {cpu / mp:.3f} | {flops * size * size / t / 1e9:.1f} | "
                    f"{r['rss_mib']:.0f} | {speed} | {diff} |")
        print(rows[-1], file=sys.stderr, flush=True)  # progress; the table comes at the end
    return rows


if __name__ == "__main__":
    main()
