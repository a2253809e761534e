"""The one way meddiff prints to a terminal: text appears literally.

Paths, series descriptions and TOML section names such as ``[data]`` or ``[[data.dicom_rules]]`` contain square
brackets that rich would read as markup and silently drop; every console here has markup and highlighting off,
and colour is given as a ``style=`` argument instead.
"""

from __future__ import annotations

from rich.console import Console


def plain_console(width: int | None = None, stderr: bool = False) -> Console:
    """A console that prints text literally (no markup, no highlighting, no emoji codes) and never breaks a
    line inside a path (tables still fit the width)."""
    return Console(width=width, stderr=stderr, markup=False, highlight=False, emoji=False, soft_wrap=True)
