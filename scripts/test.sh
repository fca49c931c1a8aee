#!/usr/bin/env bash
# Build msrnet-napari from source into a wheel, install it into a fresh virtualenv
# and run the whole test suite against the INSTALLED wheel (GUI tests under Xvfb).
#
#   bash scripts/test.sh            # what CI runs (.ci/run)
#
# Installs what it needs: Debian packages for headless Qt (when run as root with
# apt-get), a venv in .venv-test, the CPU build of torch (pinned), test extras.
# With nvcc on the machine the wheel is built with the CUDA backend, which makes
# this a compile check of cpp/cuda (GPU tests still skip without a GPU).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv-test"
log() { printf '\n== %s\n' "$*"; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "system packages (Xvfb, GL, xcb for Qt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends xvfb xauth libgl1-mesa-dri libegl1 libgl1 \
    libxkbcommon-x11-0 libxcb-cursor0 libdbus-1-3 libfontconfig1 libglib2.0-0 \
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
    libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1 libxcb-util1 >/dev/null
fi

log "fresh virtualenv $VENV"
rm -rf "$VENV" "$ROOT/dist"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch 2.13.0 CPU is pinned: a bare `torch` would pull a multi-GB CUDA build
"$VENV/bin/python" -m pip install -q "torch==2.13.0"

log "build the wheel from source (pip wheel)"
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
  export MSRNET_ENABLE_CUDA=ON   # nvcc present: the CUDA sources must compile
  echo "nvcc found: building with the CUDA backend ($(nvcc --version | tail -1))"
fi
"$VENV/bin/python" -m pip wheel -q --no-deps -w "$ROOT/dist" "$ROOT"
WHEEL="$(ls "$ROOT"/dist/msrnet_napari-*.whl)"
echo "built $WHEEL"

log "install the wheel + test extras"
"$VENV/bin/python" -m pip install -q "${WHEEL}[testing]"
"$VENV/bin/python" - <<'PY'
import msrnet_napari, msrnet_napari._core as core, os
print("installed from", os.path.dirname(msrnet_napari.__file__))
print("simd:", core.simd_level(), "| cuda built:", core.has_cuda, "| GPUs:", core.cuda_device_count())
if os.environ.get("MSRNET_ENABLE_CUDA") == "ON":
    assert core.has_cuda, "nvcc was found but the wheel has no CUDA backend"
PY

export PATH="$VENV/bin:$PATH"   # console scripts (msrnet-enhance) of the installed wheel
log "npe2 validate"
"$VENV/bin/npe2" validate msrnet-napari

log "pytest (installed wheel, not the source tree)"
cd "$(mktemp -d)"   # keep $ROOT/src off sys.path
set +e
xvfb-run -a "$VENV/bin/python" -m pytest "$ROOT/tests" -ra -q -p no:cacheprovider \
  -o cache_dir=/tmp "$@"
status=$?
set -e
exit $status
