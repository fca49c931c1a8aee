#!/usr/bin/env bash
# Set up msrnet-napari from source and run the main job on the bundled defaults,
# through the `msrnet-enhance` command line with the model chosen by the data:
#  1. the bundled real fluorescence sample (BBBC022 U2OS, 3 channels, 12-bit) -> the
#     microscopy model: denoised in its own units (background and intensities kept);
#  2. a darkened photo (from scikit-image's bundled astronaut) -> the photo model.
#
#   bash scripts/demo.sh   -> demo/u2os_cells.tif, demo/out/u2os_cells_msrnet.tif,
#                             demo/dark_astronaut.png, demo/out/dark_astronaut_msrnet.png
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "== building and installing msrnet-napari (C++ engine) into $VENV"
"$VENV/bin/python" -m pip install -q "$ROOT[io]" scikit-image
mkdir -p demo
"$VENV/bin/python" - <<'PY'
import imageio.v3 as iio
import numpy as np
import tifffile
from msrnet_napari._sample_data import dark_photo, u2os_cells
cells = np.stack([layer[0] for layer in u2os_cells()])
tifffile.imwrite("demo/u2os_cells.tif", cells)
print(f"== sample: demo/u2os_cells.tif {cells.shape} {cells.dtype} (real 12-bit fluorescence)")
data, meta, _ = dark_photo()[0]
iio.imwrite("demo/dark_astronaut.png", data)
print(f"== sample: demo/dark_astronaut.png {data.shape} {data.dtype}, mean {data.mean():.1f}/255")
PY
echo "== msrnet-enhance, model chosen by the data (16-bit gray -> microscopy, 8-bit RGB -> photo)"
"$VENV/bin/msrnet-enhance" demo/u2os_cells.tif demo/dark_astronaut.png -o demo/out --overwrite
"$VENV/bin/python" - <<'PY'
import imageio.v3 as iio
import numpy as np, tifffile
a = tifffile.imread("demo/u2os_cells.tif").astype(float); b = tifffile.imread("demo/out/u2os_cells_msrnet.tif").astype(float)
def pixel_noise(img, mask):
    # std of neighbour differences / sqrt(2) over background pairs: the pixel noise, blind to
    # the background's smooth variation (which a MAD of the values would count as noise)
    pair = mask[:, 1:] & mask[:, :-1]
    return float(np.std((img[:, 1:] - img[:, :-1])[pair]) / np.sqrt(2))
for c in range(a.shape[0]):
    bg = a[c] < np.percentile(a[c], 50)
    print(f"== result: u2os channel {c}: background median {np.median(a[c][bg]):.0f} -> {np.median(b[c][bg]):.0f} DN, "
          f"99.9th percentile {np.percentile(a[c], 99.9):.0f} -> {np.percentile(b[c], 99.9):.0f} DN, "
          f"background pixel noise {pixel_noise(a[c], bg):.2f} -> {pixel_noise(b[c], bg):.2f} DN")
a = iio.imread("demo/dark_astronaut.png"); b = iio.imread("demo/out/dark_astronaut_msrnet.png")
print(f"== result: demo/out/dark_astronaut_msrnet.png {b.shape} {b.dtype}, mean {b.mean():.1f}/255 (input {a.mean():.1f})")
PY
