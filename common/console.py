"""The one way meddiff prints to a terminal: text appears literally.

Paths, series descriptions and TOML section names such as ``[data]`` or ``[[data.dicom_rules]]`` contain square
brackets that rich would read as markup and silently drop; every console here has markup and highlighting off,
and colour is given as a ``style=`` argument instead.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def plain_console(width: int | None = None, stderr: bool = False) -> Console:
    """A console that prints text literally (no markup, no highlighting, no emoji codes) and never breaks a
    line inside a path (tables still fit the width)."""
    return Console(width=width, stderr=stderr, markup=False, highlight=False, emoji=False, soft_wrap=True)


def shown_path(path: str | Path) -> Path:
    """``path`` relative to the working directory when it lies under it: what a user typed, not the machine's
    absolute layout."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()) if path.is_absolute() else path
    except ValueError:
        return path


def grid_text(spatial: tuple[int, ...]) -> str:
    """"64 px" for images and cubes, "24 x 64 x 64 px" for anisotropic volumes."""
    return f"{spatial[-1]} px" if len(set(spatial)) == 1 else f"{' x '.join(map(str, spatial))} px"
