"""Bring the site's PACS cache up to what the query matches: list, fetch only instances not yet here (a changed
image gets a new SOP Instance UID in DICOM, so new UIDs are all there is to fetch), drop those the PACS no longer
lists, commit whole. The folder training reads is the cache's ``instances/``."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from ...common.data.problems import DataProblem
from ...common.pacs_config import PacsEndpoint
from ...common.site_config import SiteConfig, load_site_config
from ..site_paths import site_state_dir
from .cache import PacsCache
from .remote import PacsError, RemoteInstance, SeriesMatch

log = logging.getLogger(__name__)


def connect(endpoint: PacsEndpoint):
    """The client for an endpoint's protocol (imported here: a folder site never loads the PACS libraries)."""
    if endpoint.protocol == "dimse":
        from .dimse import DimsePacs

        return DimsePacs(endpoint)
    from .dicomweb import DicomwebPacs

    return DicomwebPacs(endpoint)


def pacs_cache(site_config: str | Path, site: SiteConfig) -> PacsCache:
    return PacsCache(site_state_dir(site_config) / "pacs" / site.site_id)


@dataclass
class SyncReport:
    endpoint: str
    series: list[SeriesMatch]
    listed: int = 0
    fetched: int = 0
    removed: int = 0
    seconds: float = 0.0
    problems: list[DataProblem] = field(default_factory=list)
    folder: str = ""

    def line(self) -> str:
        return (f"{self.endpoint}: {len(self.series)} series, {self.listed} instances matched; {self.fetched} fetched, "
                f"{self.removed} removed, {self.listed - self.fetched} already here ({self.seconds:.1f} s)"
                + (f"; {len(self.problems)} problem(s)" if self.problems else ""))


def matched_series(site: SiteConfig, pacs=None) -> list[SeriesMatch]:
    """What the site's query matches at the PACS (nothing is fetched); refuses an empty match with the fix.
    ``pacs``: a client already connected to the site's PACS (default: a new one)."""
    endpoint = site.pacs.source
    series = (pacs or connect(endpoint)).find_series(site.pacs.query)
    if not series:
        raise PacsError(endpoint.describe(), f"the query {asdict(site.pacs.query)} matched no study",
                        "widen [pacs.query] in site.toml (modality, study_description, study_date, study_uids)")
    return series


def sync(site_config: str | Path, refetch: bool = False) -> SyncReport:
    """Fetch what is new; raises PacsError (the cache unchanged) when the PACS cannot be used."""
    site = load_site_config(site_config)
    if site.pacs is None or site.data.source == "folder":
        raise PacsError(str(site_config), "[data] source is \"folder\": there is no PACS to sync from",
                        "set [data] source = \"dicomweb\" or \"dimse\" and fill in [pacs]")
    cache, started = pacs_cache(site_config, site), time.monotonic()
    pacs = connect(site.pacs.source)
    with cache.locked():
        if refetch:
            cache.clear()
        report = SyncReport(site.pacs.source.describe(), matched_series(site, pacs), folder=str(cache.instances_dir))
        listed = [instance for series in report.series for instance in pacs.instances(series)]
        committed = cache.committed()
        missing = [i for i in listed if i.sop_uid not in committed and not _staged(cache, i)]
        failed = _fetch(pacs, cache, missing, report.problems)
        keep = [i for i in listed if i.sop_uid not in failed]
        report.listed = len(listed)
        summary = {"endpoint": report.endpoint, "query": asdict(site.pacs.query), "series": len(report.series),
                   "instances": len(keep), "problems": [asdict(p) for p in report.problems]}
        added, report.removed = cache.commit(keep, summary)
        report.fetched = added
    report.seconds = time.monotonic() - started
    log.info(report.line())
    return report


def _staged(cache: PacsCache, instance: RemoteInstance) -> bool:
    return cache.staged_path(instance.sop_uid).exists()


def _fetch(pacs, cache: PacsCache, missing: list[RemoteInstance], problems: list[DataProblem]) -> set[str]:
    """Retrieve ``missing`` into staging. An instance the PACS sends unreadable is listed and skipped; a PACS that
    stops answering raises (what was staged is kept for the next try)."""
    received: set[str] = set()

    def receive(instance: RemoteInstance, dataset: Dataset) -> None:
        try:
            cache.stage(instance, dataset)
            received.add(instance.sop_uid)
        except Exception as error:  # pydicom raises many types on a dataset it cannot write back
            problems.append(DataProblem(f"PACS instance {instance.sop_uid}", f"could not be stored in the site's "
                                        f"cache ({type(error).__name__}: {error})", "re-send it from the modality"))

    for instance, reason in pacs.retrieve(missing, receive):
        problems.append(DataProblem(f"PACS instance {instance.sop_uid} (series {instance.series_uid})", reason,
                                    "ask the PACS admin to check this instance; the rest is used"))
    return {i.sop_uid for i in missing} - received
