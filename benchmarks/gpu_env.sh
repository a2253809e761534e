# Sourced by the GPU session scripts: install what the GPU image lacks from the wheels carried in .whl, make
# this checkout importable as `meddiff`, and record the card. Sets OUT (default bench_out).
#   wheels: python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#           monai==1.6.1 opacus==1.6.0 nibabel==5.4.2 pydicom==3.0.2 PyWavelets==1.9.0
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FLWR_TELEMETRY_ENABLED=0
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/pkgs && ln -sfn "$PWD" /tmp/pkgs/meddiff
export PYTHONPATH=/tmp/pkgs:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
