"""Walking a site's folder: sorted, inside the folder only, every unreadable entry reported."""

from __future__ import annotations

import os
from pathlib import Path

from .problems import DataError, DataProblem


def require_path(path: str | Path, what: str = "data folder") -> Path:
    """The path as a Path, or a DataError naming it and how to fix it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(p, f"{what} does not exist", "check the path in the command or in [data] path of site.toml")
    if not os.access(p, os.R_OK):
        raise DataError(p, f"{what} is not readable (permission denied)",
                        "give the user that runs meddiff read access to it")
    return p


def walk_files(root: Path, problems: list[DataProblem]) -> list[Path]:
    """Every regular file under root, sorted, without hidden files and without leaving root.

    Symbolic links that point outside root are not followed (a fingerprint must read nothing beyond the
    folder it was given); unreadable files and folders are reported, not raised.
    """
    root_real = root.resolve()
    found: list[Path] = []

    def on_error(err: OSError) -> None:
        problems.append(DataProblem(str(err.filename), f"cannot list folder ({err.strerror})",
                                    "give the user that runs meddiff read access to it"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() and not str(path.resolve()).startswith(str(root_real) + os.sep):
                problems.append(DataProblem(str(path), "symbolic link to a file outside the data folder; not read",
                                            "copy the file into the data folder"))
                continue
            if not path.is_file():
                continue
            if not os.access(path, os.R_OK):
                problems.append(DataProblem(str(path), "cannot read file (permission denied)",
                                            "give the user that runs meddiff read access to it"))
                continue
            found.append(path)
    return found
