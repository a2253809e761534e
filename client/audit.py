"""The site's audit log: every message received and sent, append-only JSON lines linked by a hash chain.

Each line is one JSON object with ``seq``, ``time`` (UTC), ``event`` and the event's fields, ``prev`` (the hash of
the line before; 64 zeros for the first) and ``hash`` = SHA-256 of ``prev`` + the line's canonical JSON without
``hash``. Editing, deleting, inserting or reordering a line breaks the chain at that line, and ``verify`` names
it (``meddiff site audit``). The chain detects changes; it cannot stop someone with write access from
rewriting the whole file from the first line on, so a site that needs that copies the last hash elsewhere
(``meddiff site audit`` prints it).

Appends take an exclusive lock (several ClientApp processes may run), are one ``write`` and are fsync'ed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

GENESIS = "0" * 64


def _canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def _digest(prev: str, body: dict) -> str:
    return hashlib.sha256((prev + _canonical(body)).encode()).hexdigest()


def _last_record(handle) -> dict | None:
    """The last complete line of an open file (read from the end), or None for an empty file."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    chunk, start = b"", size
    while start > 0 and chunk.count(b"\n") < 2:
        start = max(0, start - 65536)
        handle.seek(start)
        chunk = handle.read(size - start)
    lines = [line for line in chunk.split(b"\n") if line.strip()]
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:  # a torn line: verify() reports it, the chain goes on from the last good one
            continue
    return None


@dataclass(frozen=True)
class Verification:
    lines: int
    first_broken: int | None  # 1-based line number, None when the chain is intact
    reason: str
    last_hash: str

    @property
    def ok(self) -> bool:
        return self.first_broken is None


class AuditLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, event: str, **fields) -> dict:
        """Write one event; returns the line as written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                last = _last_record(handle)
                body = {"seq": (last["seq"] + 1) if last else 1,
                        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                        "event": event, **fields, "prev": last["hash"] if last else GENESIS}
                record = {**body, "hash": _digest(body["prev"], body)}
                handle.seek(0, os.SEEK_END)
                handle.write((json.dumps(record, sort_keys=True, default=str) + "\n").encode())
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return record

    def records(self) -> list[dict]:
        """Every line that parses (for display; ``verify`` says whether they can be trusted)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def verify(self) -> Verification:
        """Walk the chain from the first line; stop at the first line that does not link or hash correctly."""
        if not self.path.exists():
            return Verification(0, None, "no audit log yet", GENESIS)
        prev, seq, number = GENESIS, 0, 0
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            try:
                record = json.loads(line)
                claimed = record.pop("hash")
            except (json.JSONDecodeError, KeyError, AttributeError):
                return Verification(number, number, "not a complete audit record (edited, or torn by a crash)", prev)
            if record.get("prev") != prev:
                return Verification(number, number, "does not link to the line before (a line was removed, "
                                                    "inserted or reordered)", prev)
            if _digest(prev, record) != claimed:
                return Verification(number, number, "its content does not match its hash (the line was edited)",
                                    prev)
            if record.get("seq") != seq + 1:
                return Verification(number, number, f"sequence number {record.get('seq')} after {seq}", prev)
            prev, seq = claimed, record["seq"]
        return Verification(number, None, "intact", prev)
