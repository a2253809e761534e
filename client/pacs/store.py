"""Synthetic series back to the hospital's PACS: STOW-RS or C-STORE into [pacs.destination] (or the source PACS).

Only series that carry the synthetic marks of tasks/export.py are sent (DERIVED\\SECONDARY, ConversionType SYN,
the "SYNTHETIC - meddiff" description); a series whose UID the destination already holds is refused, so nothing
there is ever overwritten. Each stored series is recorded in the site's audit log."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pydicom

from ...common.pacs_config import PacsEndpoint
from ...common.site_config import load_site_config
from ...common.synthetic import is_synthetic_dicom
from ..audit import AuditLog
from ..site_paths import audit_path, site_state_dir
from .remote import PacsError
from .sync import connect


def destination(site_config: str | Path) -> PacsEndpoint:
    site = load_site_config(site_config)
    if site.pacs is None:
        raise PacsError(str(site_config), "there is no [pacs] table to store the synthetic series into",
                        "add [pacs.destination] (protocol and url, or host, port and called_aet) to site.toml")
    endpoint = site.pacs.destination or site.pacs.source
    if not endpoint.protocol:
        raise PacsError(str(site_config), "[pacs] names no protocol for storing",
                        "add [pacs.destination] with protocol = \"dicomweb\" or \"dimse\"")
    return endpoint


def store_synthetic(site_config: str | Path, folder: Path, model: str) -> list[dict]:
    """Store every synthetic series under ``folder``; returns one record per series (also in the audit log)."""
    endpoint = destination(site_config)
    series: dict[tuple[str, str], list] = defaultdict(list)
    for path in sorted(folder.rglob("*.dcm")):
        dataset = pydicom.dcmread(path)
        if not is_synthetic_dicom(dataset):
            raise PacsError(str(path), "is not a meddiff synthetic image (DERIVED\\SECONDARY, SYN, marked "
                            "SYNTHETIC); only synthetic series are sent to the PACS", "export it again with "
                            "`meddiff generate --export dicom`")
        series[(str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID))].append(dataset)
    if not series:
        raise PacsError(str(folder), "holds no DICOM to store", "export with `meddiff generate --export dicom`")
    pacs, audit, records = connect(endpoint), AuditLog(audit_path(site_state_dir(site_config))), []
    for (study_uid, series_uid), datasets in series.items():
        if pacs.series_exists(study_uid, series_uid):
            raise PacsError(endpoint.describe(), f"already holds series {series_uid}; nothing was overwritten",
                            "export the samples again (new UIDs) to store them as a new series")
    for (study_uid, series_uid), datasets in series.items():
        pacs.store(datasets)
        record = {"destination": endpoint.describe(), "study_uid": study_uid, "series_uid": series_uid,
                  "instances": len(datasets), "description": str(datasets[0].SeriesDescription), "model": model}
        audit.append("synthetic-series-stored", **record)
        records.append(record)
    return records
