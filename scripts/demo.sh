#!/usr/bin/env bash
# Set up msrnet-napari from source and run the main job on the bundled defaults:
# a darkened sample photo (generated from scikit-image's bundled astronaut) enhanced
# with the bundled default weights through the `msrnet-enhance` command line.
#
#   bash scripts/demo.sh            -> demo/dark_astronaut.png, demo/out/dark_astronaut_msrnet.png
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
from msrnet_napari._sample_data import dark_photo
data, meta, _ = dark_photo()[0]
iio.imwrite("demo/dark_astronaut.png", data)
print(f"== sample: demo/dark_astronaut.png {data.shape} {data.dtype}, mean {data.mean():.1f}/255")
PY
echo "== msrnet-enhance with the bundled default weights"
"$VENV/bin/msrnet-enhance" demo/dark_astronaut.png -o demo/out --overwrite
"$VENV/bin/python" - <<'PY'
import imageio.v3 as iio
a = iio.imread("demo/dark_astronaut.png"); b = iio.imread("demo/out/dark_astronaut_msrnet.png")
print(f"== result: demo/out/dark_astronaut_msrnet.png {b.shape} {b.dtype}, mean {b.mean():.1f}/255 (input {a.mean():.1f})")
PY
