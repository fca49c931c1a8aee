"""The CUDA engine on the CPU: cpp/cuda/cuda_engine.cu compiled as C++ against
cpp/cuda/cuda_emulation.h, checked by cpp/cuda/standalone_test.cu (its own
double-precision reference, tiling, progress and cancel).

This runs the CUDA engine's kernels and host code (tile loop, staging, buffers)
on every machine with a C++17 compiler; the real GPU build is tested by
tests/test_cuda.py where there is a GPU. Same program as the CMake option
MSRNET_CUDA_EMULATION_TEST (ctest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CPP = Path(__file__).resolve().parents[1] / "cpp"
SOURCES = [CPP / "cuda" / "cuda_engine.cu", CPP / "cuda" / "standalone_test.cu"]


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="GCC/Clang command line only"),
    pytest.mark.skipif(not all(p.is_file() for p in SOURCES), reason="no cpp/ sources here"),
    pytest.mark.skipif(_compiler() is None, reason="no C++ compiler"),
]


def test_cuda_engine_in_cpu_emulation(tmp_path):
    exe = tmp_path / "msrnet_cuda_emu"
    build = subprocess.run(
        [_compiler(), "-std=c++17", "-O1", "-pthread", "-x", "c++", "-DMSRNET_CUDA_EMULATE",
         "-I", str(CPP / "include"), "-I", str(CPP / "cuda"), *map(str, SOURCES),
         "-x", "none", "-o", str(exe)],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe), "--quick"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "PASSED: 0 failure(s)" in run.stdout, (
        run.stdout[-4000:] + run.stderr[-2000:])
    assert "[FAIL]" not in run.stdout
