"""``meddiff bench --suite quality``: the evidence suite of benchmarks/ (a source checkout has it), as one command."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..common.config import ConfigError

BUDGETS = ("quick", "full", "gpu", "smoke")  # benchmarks/quality_suite.py BUDGETS (not imported: it loads matplotlib)
SUITES = {"quality": "quality_suite.py"}  # federated vs centralised vs single site, privacy-utility, every task
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def add_parser(commands) -> None:
    p = commands.add_parser("bench", help="run a benchmark suite on the real data and write docs/RESULTS.md")
    p.add_argument("--suite", choices=sorted(SUITES), default="quality")
    p.add_argument("--quick", action="store_true", help="the quick budget (under 20 min on 2 cores)")
    p.add_argument("--budget", choices=BUDGETS, help="quick, full (the default), gpu (one GPU call, see "
                   "benchmarks/gpu_evidence.sh; every model trained until its held-out loss stops improving) or "
                   "smoke (the gpu budget at toy sizes, on CPU)")
    p.add_argument("--data", help="folder of the shared data sets (default ../shared/data)")
    p.add_argument("--out", help="run directory (default bench_out/quality-<budget>; an existing one is continued)")
    p.add_argument("--only", help="comma-separated experiments: pneumonia, pgbm, segmentation, anomaly")
    p.add_argument("--steps", help="run only the steps whose name matches this regular expression, e.g. "
                   "'pneumonia/(real|fedavg|eps-10|public)' (the others are neither run nor forgotten)")
    p.add_argument("--results", help="the results page to write (default docs/RESULTS.md)")
    p.add_argument("--report-only", action="store_true", help="run nothing; write the page from --out's results")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    script = BENCHMARKS / SUITES[args.suite]
    if not script.exists():
        raise ConfigError(f"{script} is missing: the benchmark suites ship with the source checkout, not the "
                          "installed package; run meddiff bench from a clone (pip install -e .)")
    argv = [sys.executable, str(script)] + (["--quick"] if args.quick else []) + (
        ["--report-only"] if args.report_only else []) + [
        flag for name in ("budget", "data", "out", "only", "steps", "results") if getattr(args, name)
        for flag in (f"--{name}", getattr(args, name))]
    return subprocess.run(argv).returncode
