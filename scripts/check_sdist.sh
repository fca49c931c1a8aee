#!/usr/bin/env bash
# Check the source distribution: build it (python -m build --sdist), check what it
# carries, install it from a clean temporary directory into a throwaway venv (pip
# compiles the C++ engine from the sdist alone, not from this checkout) and import
# the compiled engine there.
#
#   bash scripts/check_sdist.sh          # scripts/test.sh calls it after pytest
#
# BUILD_PY: a python with `build` installed (scripts/test.sh passes its tools
# venv); without it a venv with `build` is made in the temporary directory.
# The engine is compiled with the CUDA backend off (MSRNET_ENABLE_CUDA=OFF, the
# wheel build in scripts/test.sh already compile-checks cpp/cuda); set
# SDIST_ENABLE_CUDA=AUTO or ON to change that.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
T0=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/msrnet-sdist.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
log() { printf '\n== sdist: %s\n' "$*"; }

if [ -z "${BUILD_PY:-}" ]; then
  "$PY" -m venv "$WORK/tools"
  "$WORK/tools/bin/python" -m pip install -q "build>=1.0"
  BUILD_PY="$WORK/tools/bin/python"
fi

log "build the sdist"
"$BUILD_PY" -m build --sdist --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log"; exit 1; }
SDIST="$(ls "$WORK"/dist/msrnet_napari-*.tar.gz)"
echo "built $(basename "$SDIST") ($(du -k "$SDIST" | cut -f1) KiB)"

log "contents"
"$PY" - "$SDIST" <<'PY'
import sys, tarfile
names = tarfile.open(sys.argv[1]).getnames()
top = names[0].split("/")[0]
rel = {n[len(top) + 1:] for n in names if "/" in n}
need = ["pyproject.toml", "CMakeLists.txt", "README.md", "PKG-INFO",
        "src/msrnet_napari/__init__.py", "src/msrnet_napari/napari.yaml",
        "src/msrnet_napari/weights/msrnet_default.pt", "src/msrnet_napari/weights/MODEL_CARD.md"]
missing = [n for n in need if n not in rel]
cpp = sorted(n for n in rel if n.startswith("cpp/"))
banned = sorted(n for n in rel if n.split("/")[0] in
                {"runs", "data", "build", "dist", ".venv", ".venv-test", "wheelhouse", ".git"})
print(f"{len(rel)} files, {len(cpp)} under cpp/")
if missing or not cpp or banned:
    sys.exit(f"sdist is wrong: missing {missing}, cpp files {len(cpp)}, must not contain {banned[:10]}")
PY

log "install the sdist from a clean directory into a throwaway venv (compiles the engine)"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
mkdir "$WORK/clean"
cd "$WORK/clean"   # nothing of the checkout on sys.path or in the build
MSRNET_ENABLE_CUDA="${SDIST_ENABLE_CUDA:-OFF}" \
  "$WORK/venv/bin/python" -m pip install -q "$SDIST"

log "import the compiled engine"
"$WORK/venv/bin/python" - <<'PY'
import os
import numpy as np
import msrnet_napari
import msrnet_napari._core as core
where = os.path.dirname(msrnet_napari.__file__)
assert "site-packages" in where, f"imported from {where}, not the installed sdist"
print("installed from", where)
print("_core:", core.__file__)
print("simd:", core.simd_level(), "| cuda built:", core.has_cuda)
dark = (np.random.default_rng(0).random((32, 32, 3)) * 40).astype(np.uint8)
out = msrnet_napari.enhance(dark)   # the bundled default weights came with the sdist
assert out.shape == dark.shape and out.dtype == np.uint8 and out.mean() > dark.mean()
print("enhance with the bundled weights: ok")
PY
echo "sdist check passed ($((SECONDS - T0)) s)"
