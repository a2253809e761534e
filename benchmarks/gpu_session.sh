#!/usr/bin/env bash
# One GPU session (the device tool runs this in the repository root): the CUDA tests, then benchmarks/gpu.py.
# Everything lands in $OUT.
set -o pipefail
source benchmarks/gpu_env.sh
timeout "${TEST_SECONDS:-150}" "$PYTHON" -m pytest -q -p no:cacheprovider --import-mode=importlib \
    ${TESTS:-tests/common/diffusion/test_fast_paths.py tests/privacy/test_dp_sgd.py} 2>&1 \
    | tail -25 | tee "$OUT/tests.txt"
timeout "${BENCH_SECONDS:-420}" "$PYTHON" benchmarks/gpu.py --out "$OUT/gpu.json" "$@" 2>&1 \
    | grep -v -i "warn\|backward()" | tee "$OUT/bench.txt"
