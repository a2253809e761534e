"""JSON files that survive a crash. JSON lines are append-only: each line is one fsync'ed write, and a torn last
line (a crash mid-write) is ignored on reading, so everything before it stays usable. A whole JSON file is
replaced atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path


def append_json_line(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a crash: everything before it is intact
    return lines


def write_json_atomically(path: Path, record: dict) -> None:
    """Replace ``path`` in one step, so a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)
