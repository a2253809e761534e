#!/usr/bin/env bash
# The PGBM tasks-part-2 benchmark on a lent GPU (the device tool runs this in the repository root):
# train one diffusion model on the GPU, then reconstruction, segmentation and both translations at once, each
# supervised UNet on the same GPU for as long as the diffusion model trained (capped at CAP seconds).
# Data: .gpu_data/pgbm/pgbm_t1_t1c_flair_t2_mask_128.npz (a git-ignored copy of ../shared/data/pgbm, carried).
# Results land in $OUT: train.json, results-*.json, logs.
#   STEPS (3000), BATCH (64), CHANNELS (64,128,128), CAP (100), LIMIT (0 = all test slices) override the defaults.
set -o pipefail
source benchmarks/gpu_env.sh
RUN=/tmp/tasks2
common=(--data .gpu_data --seed 0 --limit "${LIMIT:-0}")
timeout 240 "$PYTHON" benchmarks/tasks2_pgbm.py "${common[@]}" --out "$RUN" --only none \
    --train-steps "${STEPS:-3000}" --batch-size "${BATCH:-64}" --channels "${CHANNELS:-64,128,128}" 2>&1 \
    | grep -v -i warn | tail -30 | tee "$OUT/train.txt"
cp "$RUN/model/train.json" "$OUT/train.json" || exit 1
seconds=$(python3 -c "import json; print(min(${CAP:-100}, max(1, round(json.load(open('$RUN/model/train.json'))['seconds']))))")
echo "each supervised UNet: $seconds s" | tee -a "$OUT/train.txt"
declare -A tasks=([recon]="reconstruction" [segment]="segmentation" [t1pre_t2]="t1pre -> t2" [t2_flair]="t2 -> flair")
for slug in "${!tasks[@]}"; do
    timeout 330 "$PYTHON" benchmarks/tasks2_pgbm.py "${common[@]}" --model "$RUN/model/model.pt" --out "$RUN/$slug" \
        --only "${tasks[$slug]}" --baseline-seconds "$seconds" --baseline-epochs 100000 > "$RUN/$slug.log" 2>&1 &
done
wait
for slug in "${!tasks[@]}"; do
    cp "$RUN/$slug/results.json" "$OUT/results-$slug.json"
    { echo "== $slug"; grep -v -i warn "$RUN/$slug.log" | tail -40; } >> "$OUT/tasks.txt"
done
cat "$OUT/tasks.txt"
