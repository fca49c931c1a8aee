"""How responsive napari stays while the MSR-net widget runs (issue 13, item 2).

    xvfb-run -a python benchmarks/bench_widget_latency.py [--size 2048] [--zoom]
        [--repeat 2] [--configs old new] [--stack 0] [--dask]

Opens a napari viewer (shown: under ``xvfb-run`` on a headless machine), adds a
``size`` x ``size`` uint16 image (gray, dim: the bundled microscopy model, or the
photo model with ``--rgb``), presses the widget's Run and, while the job runs,
probes the Qt event loop with a 20 ms ``QTimer``: every timeout records the time
since the previous one, so an interval of 20 ms means an idle, responsive GUI and
anything above is how long a click, a scroll or a repaint would have waited.
``--zoom`` also zooms the canvas in and out every 100 ms (each zoom repaints it).

Configurations (the same job, alternated ``--repeat`` times so load on the
machine hits both alike):

* ``old``: the widget's previous default, every core (``threads`` = all cores);
* ``new``: the widget's current default (whatever ``CPU threads`` starts at:
  *auto* = all cores but one, ``widget_jobs.auto_threads``);
* ``1``, ``2``, ...: that many threads;
* ``idle``: no job at all, the same probe (and zooming / scrolling) for
  ``--idle-seconds``: what napari's own drawing costs on this machine (run
  last in each repetition).

``--stack N`` enhances an (N, size, size) stack with "Whole stack" instead
(``--dask``: as a dask array, one chunk per plane), which also shows how soon
the result layer appears (``first layer``) and how the viewer behaves while the
planes fill in; ``--scroll`` steps through the planes meanwhile.

Prints a markdown table: interval median, p95 and max, the number of intervals
over 100 ms and 500 ms, and the run time (Run pressed -> job finished).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def _image(args) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (args.size, args.size, 3) if args.rgb else (args.size, args.size)
    if args.stack:
        shape = (args.stack, *shape)
    if args.rgb:
        return (rng.random(shape, dtype=np.float32) * 40).astype(np.uint8)
    return (100 + rng.poisson(4.0, shape)).astype(np.uint16)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    return scene.camera if scene is not None else viewer.camera


def run_once(viewer, widget, layer, threads: int | None, zoom: bool, timeout_s: float,
             scroll: bool = False, idle_s: float | None = None) -> dict:
    """One measurement; ``idle_s``: no job, the same probe and interactions for that long
    (napari's own cost of zooming / scrolling on this machine)."""
    from qtpy.QtCore import QEventLoop, QTimer

    if threads is not None:
        widget.threads.value = threads
    used = widget.build_job(layer).threads if idle_s is None else "-"
    before = {lay.name for lay in viewer.layers}
    stamps: list[float] = []
    first_layer: list[float] = []
    loop = QEventLoop()

    probe = QTimer()
    probe.setInterval(20)
    probe.timeout.connect(lambda: stamps.append(time.perf_counter()))

    zoomer = QTimer()
    zoomer.setInterval(100)
    base_zoom = _camera(viewer).zoom
    state = {"i": 0}

    def do_zoom() -> None:
        state["i"] += 1
        _camera(viewer).zoom = base_zoom * (1.25 if state["i"] % 2 else 0.8)

    zoomer.timeout.connect(do_zoom)

    scroller = QTimer()
    scroller.setInterval(250)

    def do_scroll() -> None:  # the next plane of a stack (and, so, of its result)
        state["i"] += 1
        n = layer.data.shape[0]
        viewer.dims.set_current_step(0, state["i"] % n)

    scroller.timeout.connect(do_scroll)

    watch = QTimer()
    watch.setInterval(50)

    def check() -> None:
        if not first_layer and {lay.name for lay in viewer.layers} - before:
            first_layer.append(time.perf_counter())
        elapsed = time.perf_counter() - start
        if idle_s is not None:
            if elapsed > idle_s:
                loop.quit()
        elif not widget.is_running or elapsed > timeout_s:
            loop.quit()

    watch.timeout.connect(check)
    start = time.perf_counter()
    probe.start()
    if zoom:
        zoomer.start()
    if scroll:
        scroller.start()
    watch.start()
    if idle_s is None:
        widget.run()
    loop.exec_()
    end = time.perf_counter()
    for timer in (probe, zoomer, scroller, watch):
        timer.stop()
    _camera(viewer).zoom = base_zoom
    timed_out = widget.is_running
    if timed_out:
        widget.cancel()
        while widget.is_running:
            loop.processEvents(QEventLoop.AllEvents, 100)
    for name in {lay.name for lay in viewer.layers} - before:
        viewer.layers.remove(name)
    intervals = [1000 * (b - a) for a, b in zip(stamps, stamps[1:])]
    if stamps:  # the wait before the first tick counts too (Run itself may block)
        intervals.insert(0, 1000 * (stamps[0] - start))
    return {
        "threads": used,
        "median": statistics.median(intervals) if intervals else float("nan"),
        "p95": _percentile(intervals, 95),
        "max": max(intervals) if intervals else float("nan"),
        "over100": sum(i > 100 for i in intervals),
        "over500": sum(i > 500 for i in intervals),
        "n": len(intervals),
        "run_s": end - start,
        "first_layer_s": (first_layer[0] - start) if first_layer else float("nan"),
        "status": ("idle (no job)" if idle_s is not None
                   else widget.status.value + (" (TIMED OUT)" if timed_out else "")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rgb", action="store_true", help="uint8 RGB + photo model")
    parser.add_argument("--stack", type=int, default=0, help="planes: run a whole stack")
    parser.add_argument("--dask", action="store_true", help="the stack as a dask array")
    parser.add_argument("--zoom", action="store_true", help="zoom in/out every 100 ms")
    parser.add_argument("--scroll", action="store_true",
                        help="with --stack: step to the next plane every 250 ms")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=["old", "new"])
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="length of an 'idle' configuration")
    parser.add_argument("--tile", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    import tempfile

    import napari
    from qtpy.QtWidgets import QApplication

    from msrnet_napari import widget_jobs
    from msrnet_napari._widget import MSRNetWidget

    # the widget's defaults, not the settings saved by whoever runs this
    os.environ[widget_jobs.SETTINGS_ENV] = tempfile.mkdtemp(prefix="msrnet-bench-")

    data = _image(args)
    if args.dask:
        import dask.array as da

        data = da.from_array(data, chunks=(1, *data.shape[1:]))
    viewer = napari.Viewer(show=True)
    layer = viewer.add_image(data, name="bench", rgb=args.rgb)
    widget = MSRNetWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MSR-net enhance")
    default_threads = int(widget.threads.value)
    widget.tile.value = args.tile
    if args.stack:
        widget.whole_stack.value = True
    app = QApplication.instance()
    t_end = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:  # first paint, idle GUI
        app.processEvents()
        time.sleep(0.01)

    # warm-up on a small layer: weights read, engine built (not part of any measurement)
    small = viewer.add_image(np.asarray(data[..., :64, :64, :] if args.rgb else data[..., :64, :64]),
                             name="warm-up", rgb=args.rgb)
    widget.image_layer.value = small
    widget.run()
    while widget.is_running:
        app.processEvents()
        time.sleep(0.01)
    for lay in [lay for lay in viewer.layers if lay.name != "bench"]:
        viewer.layers.remove(lay)
    widget.image_layer.value = layer

    cores = os.cpu_count() or 1
    settings = {"old": cores, "new": default_threads}
    # "idle" goes last: zooming a freshly shown stack right after the warm-up crashed
    # Mesa's llvmpipe (glDrawArrays) under Xvfb here, never after a measured run
    configs = [c for c in args.configs if c != "idle"] + [c for c in args.configs if c == "idle"]
    rows = []
    for rep in range(args.repeat):
        for config in configs:
            idle = config == "idle"
            threads = None if idle else settings[config] if config in settings else int(config)
            r = run_once(viewer, widget, layer, threads, args.zoom, args.timeout,
                         scroll=args.scroll and args.stack > 0,
                         idle_s=args.idle_seconds if idle else None)
            r["config"] = config
            r["rep"] = rep
            rows.append(r)
            print(f"  {config:>4} rep {rep}: threads {r['threads']}, median {r['median']:.0f} ms, "
                  f"p95 {r['p95']:.0f} ms, max {r['max']:.0f} ms, run {r['run_s']:.1f} s "
                  f"- {r['status']}", file=sys.stderr, flush=True)

    what = (f"{args.stack} x " if args.stack else "") + f"{args.size}^2 " + \
        ("uint8 RGB" if args.rgb else "uint16 gray") + (" (dask, whole stack)" if args.dask
                                                         else " (whole stack)" if args.stack
                                                         else "")
    actions = [a for a, on in (("zooming every 100 ms", args.zoom),
                               ("scrolling every 250 ms", args.scroll and args.stack)) if on]
    default = widget_jobs.resolve_threads(default_threads)
    print(f"\n{what}, {cores} cores, 20 ms probe{''.join(', ' + a for a in actions)}; "
          f"widget default CPU threads: {'auto = ' if default_threads == 0 else ''}{default}\n")
    print("| config | threads | interval median (ms) | p95 (ms) | max (ms) | >100 ms | >500 ms "
          "| run (s) |" + (" first layer (s) |" if args.stack else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if args.stack else ""))
    for r in rows:
        line = (f"| {r['config']} | {r['threads']} | {r['median']:.0f} | {r['p95']:.0f} | "
                f"{r['max']:.0f} | {r['over100']}/{r['n']} | {r['over500']} | {r['run_s']:.1f} |")
        if args.stack:
            line += f" {r['first_layer_s']:.2f} |"
        print(line)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
