"""Append-only JSON-lines files that survive a crash: each line is one fsync'ed write, and a torn last line (a
crash mid-write) is ignored on reading, so everything before it stays usable."""

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
