#!/usr/bin/env bash
# The GPU check the issues name: `bash scripts/gpu_check.sh` on the lent GPU machine (the
# device tool runs it in the repository root; results go to $OUT). It is
# `scripts/gpu_session.sh check` - CUDA parity (FP32 and TF32) with the standalone harness,
# the extension built with CUDA, tests/test_cuda.py, benchmarks/bench_cuda.py - see there.
exec bash "$(dirname "${BASH_SOURCE[0]}")/gpu_session.sh" check "$@"
