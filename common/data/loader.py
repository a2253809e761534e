"""One entry point for every format: detect it, load it, report what was skipped."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import DataConfig
from .dicom import load_dicom
from .files import require_path
from .nifti import is_nifti, load_nifti
from .npz import load_npz
from .png import SUFFIXES as IMAGE_SUFFIXES
from .png import load_png
from .problems import DataError, LoadedData

log = logging.getLogger(__name__)

LOADERS = {"dicom": load_dicom, "nifti": load_nifti, "png": load_png, "npz": load_npz}


def detect_format(path: Path) -> str:
    """npz for an .npz file; for a folder, the kind of file it mostly holds (DICOM files often have no suffix)."""
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        if is_nifti(path) or path.suffix.lower() in IMAGE_SUFFIXES:
            raise DataError(path, "a single image file was given", "give the folder that holds the images")
        return "dicom"
    nifti = images = npz = 0
    for index, file in enumerate(path.rglob("*")):
        if index > 20_000:
            break
        if file.name.startswith(".") or not file.is_file():
            continue
        nifti += is_nifti(file)
        images += file.suffix.lower() in IMAGE_SUFFIXES
        npz += file.suffix.lower() == ".npz"
    if nifti:
        return "nifti"
    if images:
        return "png"
    if npz:
        raise DataError(path, "the folder holds .npz archives", "give the path of one .npz file")
    return "dicom"


def load_dataset(path: str | Path | None = None, config: DataConfig | None = None, *,
                 log_problems: bool = True) -> LoadedData:
    """Load a site's data set in its channel schema. Raises DataError only if nothing can be loaded."""
    config = config or DataConfig()
    root = require_path(path or config.path)
    fmt = config.format if config.format != "auto" else detect_format(root)
    data = LOADERS[fmt](root, config)
    for problem in data.problems if log_problems else ():
        (log.warning if problem.skipped else log.info)("%s", problem)
    return data
