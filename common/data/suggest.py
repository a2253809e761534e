"""``meddiff site check PATH --suggest-config``: a ``[data]`` section for site.toml built from what a folder holds."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import DataConfig
from .dicom_suggest import rules_block
from .dicom_volume import discover_series
from .files import require_path, walk_files
from .loader import detect_format, load_dataset
from .pairing import IMAGE_FOLDERS, find_folder
from .problems import DataProblem


def suggest_data_section(path: str | Path, config: DataConfig) -> str:
    """TOML to paste into site.toml: the folder's format and channels, and for DICOM one rule per series."""
    root = require_path(path)
    fmt = config.format if config.format != "auto" else detect_format(root)
    header = [f"# built by `meddiff site check --suggest-config` from {root}: check the channel names, then paste",
              "[data]", f"path = {json.dumps(str(root.resolve()))}", f"format = \"{fmt}\""]
    if fmt == "dicom":
        problems: list[DataProblem] = []
        series = discover_series(walk_files(root, problems) if root.is_dir() else [root], problems)
        if not series:
            return "\n".join(header + ["# no readable DICOM series found in this folder"])
        return "\n".join(header + ["", rules_block(series)])
    data = load_dataset(root, config, log_problems=False)
    channels = ", ".join(json.dumps(c) for c in data.schema.channels)
    lines = header + [f"channels = [{channels}]"]
    if data.schema.is_colour:
        lines.append("colour = \"rgb\"  # \"grey\" turns colour images into one luminance channel")
    if data.schema.class_names:
        lines.append(f"class_names = [{', '.join(json.dumps(c) for c in data.schema.class_names)}]")
    if fmt == "png" and not config.case_folders and _nested(root, data.examples):
        lines.append("# case_folders = true  # images sit two folders deep: if the inner folders are patients, this "
                     "makes the patient (not the image) the unit of DP")
    return "\n".join(lines)


def _nested(root: Path, examples) -> bool:
    """Whether some image sits two or more folders below images/ (class/case folders, perhaps)."""
    image_dir = find_folder(root, IMAGE_FOLDERS) or root
    return any(len(Path(e.source).relative_to(image_dir).parts) > 2 for e in examples
               if Path(e.source).is_relative_to(image_dir))
