#!/usr/bin/env bash
# The evidence suite at GPU scale in one device call (the device tool runs this in the repository root):
#   here, once:   bash benchmarks/gpu_prepare.sh            (.whl and .gpu_data, the carried folders)
#   GPU call:     run(command="bash benchmarks/gpu_evidence.sh", carry=[".whl", ".gpu_data"], timeout_s=570)
#   here, after:  bash benchmarks/gpu_evidence.sh --page FILES_AT/results.tar.gz   (writes docs/RESULTS-gpu.md)
# The call runs `meddiff bench --budget gpu` (benchmarks/quality_suite.py: PneumoniaMNIST and PGBM at 64 px,
# federated vs centralised vs each site alone and the privacy-utility table, every model trained until its
# held-out loss stops improving) within LIMIT seconds (default 480), then packs every result file the page is
# written from (JSON, JSON lines, TOML, logs, figures; no checkpoints) into $OUT/results.tar.gz.
# CPU smoke run here: LOCAL=1 BUDGET=smoke DATA=../shared/data PYTHON=.venv/bin/python bash benchmarks/gpu_evidence.sh
set -o pipefail
BUDGET=${BUDGET:-gpu}
if [ "${1:-}" = "--page" ]; then  # here: the page from the files the call brought back
    [ -f "${2:-}" ] || { echo "usage: $0 --page RESULTS.tar.gz (the file the GPU call brought back)"; exit 2; }
    run=bench_out/quality-$BUDGET && rm -rf "$run" && mkdir -p "$run" && tar -xzf "$2" -C "$run" || exit 1
    exec "${PYTHON:-.venv/bin/python}" benchmarks/quality_suite.py --budget "$BUDGET" --report-only --out "$run" \
        --results "${RESULTS:-docs/RESULTS-$BUDGET.md}"
fi
source benchmarks/gpu_env.sh
RUN=${RUN:-/tmp/quality-$BUDGET}
timeout "${LIMIT:-480}" "$PYTHON" benchmarks/quality_suite.py --budget "$BUDGET" --data "${DATA:-.gpu_data}" \
    --out "$RUN" --results "$RUN/RESULTS-$BUDGET.md" 2>&1 | tee "$OUT/suite.txt"
code=$?
(cd "$RUN" && find . \( -name .flwr -o -name '*.pt' -o -name '*.npz' \) -prune -o -type f \( -name '*.json' \
    -o -name '*.jsonl' -o -name '*.toml' -o -name '*.log' -o -name '*.png' -o -name '*.md' -o -name '*.html' \) \
    -print0 | tar -czf "$OUT/results.tar.gz" --null -T -)
ls -la "$OUT"
echo "suite exit $code; results in $OUT/results.tar.gz"
exit $code
