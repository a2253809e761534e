"""The site's copy of what its PACS query matched, beside site.toml (``.meddiff-site/pacs/<site>/``; folders 0700,
files 0600):

    instances/<study>/<series>/<sop>.dcm   what training reads: only instances of a sync that finished
    staging/<sop>.dcm                      fetched by an unfinished sync (kept, so a retry does not fetch them again)
    index.json                             the committed instances and the last sync (written atomically)

A sync fetches into staging and commits only when every listed instance is there, so a failed sync (PACS down,
timeout) leaves ``instances/`` exactly as it was: nothing half-written is ever read."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pydicom.dataset import Dataset

from .remote import RemoteInstance


def _safe(uid: str) -> str:
    """A UID as a file name: UIDs are digits and dots, but a PACS may send anything."""
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in uid)[:128] or "unknown"


class PacsCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.instances_dir = folder / "instances"
        self.staging_dir = folder / "staging"
        self.index_path = folder / "index.json"

    def _make(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One sync at a time (the daemon's round and an admin's command may overlap)."""
        self._make(self.folder)
        with open(self.folder / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def index(self) -> dict:
        try:
            return json.loads(self.index_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {"instances": {}, "last_sync": None}

    def committed(self) -> dict[str, list[str]]:
        """SOP UID -> [study UID, series UID] of every instance training may read."""
        return self.index().get("instances", {})

    def has_data(self) -> bool:
        return bool(self.committed()) and self.instances_dir.is_dir()

    def staged_path(self, sop_uid: str) -> Path:
        return self.staging_dir / f"{_safe(sop_uid)}.dcm"

    def live_path(self, instance: RemoteInstance) -> Path:
        return self.instances_dir / _safe(instance.study_uid) / _safe(instance.series_uid) / f"{_safe(instance.sop_uid)}.dcm"

    def stage(self, instance: RemoteInstance, dataset: Dataset) -> None:
        """Write one fetched instance to staging atomically (a crash leaves no partial file under its name)."""
        self._make(self.staging_dir)
        final = self.staged_path(instance.sop_uid)
        partial = final.with_suffix(".partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            dataset.save_as(handle, enforce_file_format=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)

    def commit(self, remote: list[RemoteInstance], summary: dict) -> tuple[int, int]:
        """Move staged instances into place, drop those the PACS no longer lists, write the index last.

        Returns (added, removed). Every instance in ``remote`` must be staged or already committed."""
        committed, wanted = self.committed(), {i.sop_uid: i for i in remote}
        added = 0
        for sop_uid, instance in wanted.items():
            if sop_uid in committed and self.live_path(instance).exists():
                continue
            target = self.live_path(instance)
            self._make(target.parent)
            os.replace(self.staged_path(sop_uid), target)
            added += 1
        removed = 0
        for sop_uid, (study, series) in committed.items():
            if sop_uid not in wanted:
                self.live_path(RemoteInstance(study, series, sop_uid)).unlink(missing_ok=True)
                removed += 1
        for folder in sorted(self.instances_dir.glob("*/*"), reverse=True) + sorted(self.instances_dir.glob("*")):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        index = {"instances": {sop: [i.study_uid, i.series_uid] for sop, i in wanted.items()},
                 "last_sync": {**summary, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}}
        partial = self.index_path.with_suffix(".partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(index, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.index_path)
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        return added, removed

    def clear(self) -> None:
        """Forget everything fetched (``meddiff site sync --refetch``)."""
        for path in (self.instances_dir, self.staging_dir):
            shutil.rmtree(path, ignore_errors=True)
        self.index_path.unlink(missing_ok=True)
