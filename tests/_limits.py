"""Shared by the hostile-input tests: a fresh Python subprocess under resource limits.

LIMITS_PRELUDE goes at the top of a runner script (`python -c`): it defines
``peak_mb()`` (peak RSS in MiB) and ``apply_limits(headroom, cpu)`` (address space =
the interpreter's size now + headroom; CPU seconds), which the runner calls after its
own imports, like a real run would have them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEADROOM = 768 * 1024**2  # address space beyond the interpreter's after imports
CPU_SECONDS = 10  # RLIMIT_CPU of the subprocess: an old-style hang dies here

LIMITS_PRELUDE = r"""
import json, os, sys, time
try:
    import resource
except ImportError:
    resource = None

def peak_mb():
    if resource is None:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024

def apply_limits(headroom, cpu):
    if resource is None:
        return
    if sys.platform.startswith("linux"):
        with open("/proc/self/status") as fh:
            vm = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, vm + headroom))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
"""


def limited_env() -> dict:
    """This interpreter's import path, one thread per BLAS/OpenMP pool."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1",
                OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run_limited(runner: str, *args: str, timeout: float, what: str, who: str):
    """Run `runner` (argv: HEADROOM, CPU_SECONDS, *args) in a fresh subprocess; the JSON
    it prints last. Fails the test on a timeout or a dead process."""
    try:
        res = subprocess.run([sys.executable, "-c", runner, str(HEADROOM), str(CPU_SECONDS),
                              *args], capture_output=True, text=True, timeout=timeout,
                             env=limited_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish within {timeout} s")
    assert res.returncode == 0, (f"{who} process died (status {res.returncode}: over the "
                                 f"CPU or memory limit?)\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])
