"""How the data layer reports bad input: a clear reason and a fix, naming the file, never a crash.

A loader collects a :class:`DataProblem` per file it cannot use and goes on with the rest; it raises
:class:`DataError` only when nothing at all can be loaded (wrong path, empty folder, wrong config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..schema import ChannelSchema, Example


@dataclass(frozen=True)
class DataProblem:
    """One file (or folder) that was skipped or changed, why, and what the site admin can do."""

    path: str
    reason: str
    fix: str = ""
    skipped: bool = True  # False for a note: the file was used, but changed (e.g. colour -> grey)

    def __str__(self) -> str:
        what = "skipped" if self.skipped else "note"
        return f"{what}: {self.path}: {self.reason}" + (f" (fix: {self.fix})" if self.fix else "")


class DataError(Exception):
    """Nothing could be loaded from a path: the message names the path, the reason and the fix."""

    def __init__(self, path: str | Path, reason: str, fix: str = "", problems: list[DataProblem] | None = None) -> None:
        self.path, self.reason, self.fix, self.problems = str(path), reason, fix, list(problems or [])
        super().__init__(f"{path}: {reason}" + (f". Fix: {fix}" if fix else ""))


@dataclass
class LoadedData:
    """What a loader returns: the examples in the schema plus every problem met on the way.

    patient_ids: where the examples' patient ids come from ("DICOM PatientID", ...), or "" when the data names no
    patients (each example's id is then only a file name or an index, and must not be read as a patient)."""

    schema: ChannelSchema
    examples: list[Example] = field(default_factory=list)
    problems: list[DataProblem] = field(default_factory=list)
    root: str = ""
    format: str = ""
    patient_ids: str = ""

    @property
    def skipped(self) -> list[DataProblem]:
        return [p for p in self.problems if p.skipped]

    @property
    def notes(self) -> list[DataProblem]:
        return [p for p in self.problems if not p.skipped]

    def skipped_paths(self) -> set[str]:
        return {p.path for p in self.skipped}
