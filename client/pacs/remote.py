"""What a PACS query matched, and the one error a PACS problem becomes (a one-line message naming the PACS and
the fix; never a credential)."""

from __future__ import annotations

from dataclasses import dataclass

from ...common.data.problems import DataError


class PacsError(DataError):
    """The PACS could not be used: down, refused the credentials, timed out, matched nothing, or refused a store."""


@dataclass(frozen=True)
class SeriesMatch:
    """One series the query matched, as the PACS describes it (before anything is fetched)."""

    study_uid: str
    series_uid: str
    patient_id: str = ""
    modality: str = ""
    description: str = ""
    study_description: str = ""
    instances: int = 0  # as the PACS counts them (0 when it does not say)


@dataclass(frozen=True)
class RemoteInstance:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str = ""
