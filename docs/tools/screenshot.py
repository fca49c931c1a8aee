"""Render docs/images/widget.png: napari with the MSR-net widget docked, a dark
sample and its enhanced copy side by side.

Run headless with a virtual display::

    xvfb-run -a python docs/tools/screenshot.py                 # bundled default weights
    xvfb-run -a python docs/tools/screenshot.py --weights ckpt.pt
    xvfb-run -a python docs/tools/screenshot.py --random        # untrained demo weights

Without --weights, the bundled default model is used when installed; otherwise
(or with --random) a small random-weights model is written to a temporary
folder (needs torch) and the caption in the image says so.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # docs/tools/ -> repository root


def _random_checkpoint(folder: Path) -> Path:
    from msrnet_napari.config import MSRNetConfig
    from msrnet_napari.training.model import MSRNet, init_weights, save_checkpoint

    model = init_weights(MSRNet(MSRNetConfig(depth=2, width=8)), seed=0)
    return save_checkpoint(model, folder / "random_weights.pt")


def _pick_weights(args, tmp: Path) -> tuple[Path | None, str]:
    """(path or None for the bundled default, caption text)."""
    if args.weights:
        return Path(args.weights), f"weights: {Path(args.weights).name}"
    if not args.random:
        try:
            from msrnet_napari.weights import default_weights_path

            default_weights_path()
            return None, "weights: bundled default"
        except FileNotFoundError:
            print("no bundled default weights; using random untrained weights", file=sys.stderr)
    return _random_checkpoint(tmp), "weights: RANDOM, UNTRAINED (demo of the widget only)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "widget.png"))
    parser.add_argument("--weights", help="checkpoint to use instead of the bundled default")
    parser.add_argument("--random", action="store_true", help="use random untrained weights")
    parser.add_argument("--sample", default="dark_photo",
                        choices=["dark_photo", "dark_coffee", "dim_fluorescence", "u2os_cells"])
    parser.add_argument("--size", default="1600x760", help="window size WxH")
    args = parser.parse_args(argv)

    import napari

    try:  # keep napari's "PyQt5 is deprecated" toast out of the picture (private flag)
        from napari._qt import qt_main_window

        qt_main_window.SHOW_QT_WARNING = False
    except (ImportError, AttributeError):
        pass
    from qtpy.QtWidgets import QApplication

    from msrnet_napari import _sample_data
    from msrnet_napari._widget import MSRNetWidget
    from msrnet_napari.widget_jobs import MODEL_AUTO, MODEL_CHECKPOINT

    tmp = Path(tempfile.mkdtemp(prefix="msrnet-shot-"))
    weights, caption = _pick_weights(args, tmp)

    viewer = napari.Viewer(show=True, title="msrnet-napari")
    width, height = (int(v) for v in args.size.lower().split("x"))
    viewer.window._qt_window.resize(width, height)

    data, meta, _ = getattr(_sample_data, args.sample)()[0]
    layer = viewer.add_image(data, **meta)
    try:  # the installed plugin, as a user gets it
        _, widget = viewer.window.add_plugin_dock_widget("msrnet-napari", "MSR-net enhance")
    except Exception:  # not installed: dock the widget class directly
        widget = MSRNetWidget(viewer)
        viewer.window.add_dock_widget(widget, name="MSR-net enhance", area="right")
    widget.image_layer.value = layer
    if weights is None:
        widget.model.value = MODEL_AUTO  # the bundled model the data calls for
    else:
        widget.model.value = MODEL_CHECKPOINT
        widget.checkpoint.value = weights
    widget.preview()  # show the intensity decision in the widget
    widget.tile.value = 128

    app = QApplication.instance()
    widget.run()
    deadline = time.monotonic() + 600
    while widget.is_running and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    if widget.is_running:
        print("enhancement did not finish in time", file=sys.stderr)
        return 1
    enhanced = [lyr for lyr in viewer.layers if lyr.name.endswith("(MSR-net)")]
    if not enhanced:
        print("no enhanced layer was added (see notifications)", file=sys.stderr)
        return 1

    viewer.grid.enabled = True  # input (left) and result (right) side by side
    viewer.text_overlay.visible = True
    viewer.text_overlay.position = "top_center"
    viewer.text_overlay.text = f"left: input   right: MSR-net   ({caption})"
    viewer.text_overlay.font_size = 10
    viewer.text_overlay.color = "white"
    viewer.layers.selection.active = enhanced[0]
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(f"wrote {out} ({caption})")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
