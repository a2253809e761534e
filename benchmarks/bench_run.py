"""What the task benchmarks share: running a `meddiff` sub-command as a site admin would, stopping on failure."""

from __future__ import annotations

from meddiff.cli import main as meddiff


def run_meddiff(arguments: list[str]) -> None:
    code = meddiff(arguments)
    if code != 0:
        raise SystemExit(f"meddiff {' '.join(arguments)} failed with exit code {code}")
