#!/usr/bin/env bash
# One GPU session (the device tool runs this in the repository root): install what the GPU image lacks from
# wheels carried in .whl, run the CUDA tests, then benchmarks/gpu.py. Everything lands in $OUT.
#   wheels: python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#           monai==1.6.1 opacus==1.6.0 nibabel==5.4.2 pydicom==3.0.2 PyWavelets==1.9.0
set -o pipefail
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FLWR_TELEMETRY_ENABLED=0
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/pkgs && ln -sfn "$PWD" /tmp/pkgs/meddiff
export PYTHONPATH=/tmp/pkgs:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout "${TEST_SECONDS:-150}" python3 -m pytest -q -p no:cacheprovider --import-mode=importlib \
    ${TESTS:-tests/common/diffusion/test_fast_paths.py tests/privacy/test_dp_sgd.py} 2>&1 \
    | tail -25 | tee "$OUT/tests.txt"
timeout "${BENCH_SECONDS:-420}" python3 benchmarks/gpu.py --out "$OUT/gpu.json" "$@" 2>&1 \
    | grep -v -i "warn\|backward()" | tee "$OUT/bench.txt"
