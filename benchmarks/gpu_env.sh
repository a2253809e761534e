# Sourced by the GPU session scripts: install what the GPU image lacks from what the call carried in .whl, make
# this checkout importable as `meddiff` (and `meddiff` a command), and record the machine. Sets OUT (default
# bench_out). Carried, either:
#   .whl/site.tar.xz  the unpacked Python 3.12 packages, xz-compressed (benchmarks/gpu_prepare.sh makes it; the
#                     Flower simulation's Ray does not fit the 64 MiB a call carries as wheels), or
#   .whl/*.whl        wheels (python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ...)
# With neither, or LOCAL=1 (a CPU smoke run here), the current environment is used as it is.
OUT=${OUT:-bench_out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FLWR_TELEMETRY_ENABLED=0 MEDDIFF_TRACKING=off
carried=
if [ -n "${LOCAL:-}" ]; then
    :
elif [ -f .whl/site.tar.xz ]; then
    mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site && carried=1 || exit 1
elif compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && carried=1 || exit 1
fi
if [ -n "$carried" ]; then
    mkdir -p /tmp/pkgs /tmp/bin && ln -sfn "$PWD" /tmp/pkgs/meddiff
    export PYTHONPATH=/tmp/pkgs:/tmp/site PATH=/tmp/bin:$PATH
    printf '#!/bin/sh\nexec %s -m meddiff "$@"\n' "$PYTHON" > /tmp/bin/meddiff && chmod +x /tmp/bin/meddiff
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi: no GPU"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
    | tee "$OUT/gpu.txt"
