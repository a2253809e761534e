"""What the task benchmarks share: running a `meddiff` sub-command as a site admin would (stopping on failure),
reading a trained model's training record, and writing the data configs of a split."""

from __future__ import annotations

import json
from pathlib import Path

from meddiff.cli import main as meddiff


def run_meddiff(arguments: list[str]) -> None:
    code = meddiff(arguments)
    if code != 0:
        raise SystemExit(f"meddiff {' '.join(arguments)} failed with exit code {code}")


def training_record(model: Path) -> dict:
    """The train.json `meddiff train` wrote beside ``model`` (steps, seconds, ...), or {} for a model without."""
    path = Path(model).parent / "train.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_data_configs(out: Path, folders: dict[str, Path], data_lines: str) -> dict[str, Path]:
    """One site.toml per split (``OUT/<name>.toml``): ``[data] path`` = the split's folder, plus ``data_lines``."""
    configs = {}
    for name, folder in folders.items():
        configs[name] = out / f"{name}.toml"
        configs[name].write_text(f'[data]\npath = "{folder}"\n{data_lines}')
    return configs
