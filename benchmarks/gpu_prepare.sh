#!/usr/bin/env bash
# Run HERE, once (about 3 minutes), before a GPU call of benchmarks/gpu_evidence.sh: puts into the git-ignored
# folders that the call carries (.whl and .gpu_data) the Python 3.12 packages the GPU image lacks and the data the
# suite reads, then prints what will travel against the device tool's 64 MiB limit.
#   Ray's wheel (74 MB) alone is over that limit. Its wheel is stripped of what a Flower simulation never loads
#   (the Java jar, the dashboard's web client, RLlib, Serve, Data, Tune, Train, LLM, AIR), and all wheels are
#   unpacked (unzip keeps the executables' modes) and xz-compressed: .whl/site.tar.xz, about 40 MB.
#   grpcio and protobuf are the image's own (they are there; the simulation imports no grpc health checking).
# The versions are this checkout's venv's, so the GPU run imports what the tests here ran against.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
PACKAGES=(monai opacus nibabel pydicom PyWavelets flwr ray alembic SQLAlchemy fastapi starlette uvicorn cryptography
          pycryptodome iterators grpcio-health-checking prompt_toolkit wcwidth tomli tomli_w Mako
          greenlet cffi pycparser jsonschema jsonschema-specifications referencing rpds-py pydantic pydantic_core
          annotated-types typing-inspection)
pins=()
for name in "${PACKAGES[@]}"; do
    version=$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    pins+=("$name==$version")
done
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$wheels" \
    "${pins[@]}" 2>&1 | grep -v "is ignored: it is neither" || true
[ "$(ls "$wheels" | wc -l)" -eq "${#PACKAGES[@]}" ] || { echo "expected ${#PACKAGES[@]} wheels in $wheels"; exit 1; }
zip -q -d "$wheels"/ray-*.whl 'ray/jars/*' 'ray/dashboard/client/*' 'ray/rllib/*' 'ray/serve/*' 'ray/data/*' \
    'ray/tune/*' 'ray/train/*' 'ray/llm/*' 'ray/air/*' > /dev/null
mkdir -p "$wheels/site"
for wheel in "$wheels"/*.whl; do unzip -q -o "$wheel" -d "$wheels/site"; done
rm -rf .whl && mkdir -p .whl
tar -C "$wheels/site" -cf - . | xz -9 -T2 > .whl/site.tar.xz
rm -rf .gpu_data && mkdir -p .gpu_data/medmnist .gpu_data/pgbm
cp "$DATA/medmnist/pneumoniamnist.npz" .gpu_data/medmnist/
cp "$DATA/pgbm/pgbm_t1_t1c_flair_t2_mask_128.npz" .gpu_data/pgbm/
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
wheels=$(du -sb .whl | cut -f1)
data=$(du -sb .gpu_data | cut -f1)
total=$((tree + wheels + data))
printf '%-28s %8s\n' "what travels" "MiB" "tracked files" "$((tree >> 20))" ".whl (${#PACKAGES[@]} packages)" \
    "$((wheels >> 20))" ".gpu_data" "$((data >> 20))" "total (limit 64)" "$((total >> 20))"
[ "$total" -le $((64 << 20)) ] || { echo "over the 64 MiB the device tool carries: leave out a data set"; exit 1; }
