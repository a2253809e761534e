"""site.toml's ``[pacs]``: the site's PACS, which studies to fetch from it, and where synthetic series go.

    [data]
    source = "dicomweb"                  # or "dimse"; "folder" (the default) reads [data] path
    [pacs]
    url = "https://pacs.hospital.local/dicom-web"   # DICOMweb (QIDO-RS / WADO-RS / STOW-RS)
    username_env = "MEDDIFF_PACS_USER"   # credentials: names of environment variables (or username / password)
    password_env = "MEDDIFF_PACS_PASSWORD"
    ca_bundle = "/etc/ssl/hospital-ca.pem"
    host = "pacs.hospital.local"         # DIMSE (C-FIND, C-GET, C-STORE)
    port = 104
    called_aet = "PACS"
    calling_aet = "MEDDIFF"
    [pacs.query]
    modality = "MR"
    study_description = "*BRAIN*"
    study_date = "20200101-20241231"
    study_uids = []
    series_description = ""              # empty: every series of a matched study (the channel rules choose)
    [pacs.destination]                   # synthetic series (meddiff generate --to-pacs); absent: the same PACS
    protocol = "dicomweb"
    url = "https://research-pacs.hospital.local/dicom-web"

The only network peers are these endpoints. Credentials are never printed, logged or audited: ``describe()``
names an endpoint without them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from .config import ConfigError, build_section

PROTOCOLS = ("dicomweb", "dimse")
DICOM_DATE_RANGE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")


@dataclass(frozen=True)
class PacsEndpoint:
    """One PACS: a DICOMweb base URL, or a DIMSE host, port and AE titles; and how to log in to it."""

    protocol: str = ""  # "dicomweb" or "dimse"; the source's is [data] source
    url: str = ""
    username: str = ""
    password: str = ""
    username_env: str = ""
    password_env: str = ""
    ca_bundle: str = ""  # TLS: the CA certificates a DICOMweb server's certificate must chain to
    host: str = ""
    port: int = 104
    called_aet: str = ""
    calling_aet: str = "MEDDIFF"
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.protocol and self.protocol not in PROTOCOLS:
            raise ConfigError(f"[pacs] protocol = {self.protocol!r} is not one of {list(PROTOCOLS)}")
        if self.url and urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError(f"[pacs] url = {self.url!r} must start with https:// (or http:// on loopback)")
        if self.url and (urlsplit(self.url).username or urlsplit(self.url).password):
            raise ConfigError("[pacs] url must not hold credentials; use username_env / password_env")
        if self.timeout_s <= 0:
            raise ConfigError(f"[pacs] timeout_s must be > 0, got {self.timeout_s}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"[pacs] port must be 1-65535, got {self.port}")
        if len(self.calling_aet) > 16 or len(self.called_aet) > 16:
            raise ConfigError("[pacs] AE titles are at most 16 characters")

    def require(self, protocol: str, where: str) -> None:
        """Refuse an endpoint that lacks what ``protocol`` needs, naming the keys to set."""
        if protocol == "dicomweb" and not self.url:
            raise ConfigError(f"{where} needs url = \"https://.../dicom-web\" (the DICOMweb base URL)")
        if protocol == "dimse" and not (self.host and self.called_aet):
            raise ConfigError(f"{where} needs host, port and called_aet (the PACS's AE title) for DIMSE")

    def credentials(self) -> tuple[str, str] | None:
        """(user, password) from site.toml or the environment variables it names; None when none are set."""
        user, password = self.username, self.password
        for name, key in ((self.username_env, "username_env"), (self.password_env, "password_env")):
            if name and name not in os.environ:
                raise ConfigError(f"[pacs] {key} names the environment variable {name}, which is not set; "
                                  "export it in the environment that runs meddiff")
        user = os.environ[self.username_env] if self.username_env else user
        password = os.environ[self.password_env] if self.password_env else password
        return (user, password) if user or password else None

    def describe(self) -> str:
        """The endpoint as a person reads it: never a credential."""
        if self.protocol == "dimse":
            return f"DIMSE {self.called_aet}@{self.host}:{self.port}"
        return f"DICOMweb {self.url}"


@dataclass(frozen=True)
class PacsQuery:
    """Which studies the site trains on. Empty keys match everything; wildcards (*, ?) as in DICOM matching."""

    modality: str = ""  # ModalitiesInStudy at study level, Modality at series level
    study_description: str = ""
    study_date: str = ""  # a DICOM date range: 20200101-20241231, 20200101-, -20241231 or one date
    study_uids: tuple[str, ...] = ()
    series_description: str = ""  # only series whose description matches (empty: every series of a study)

    def __post_init__(self) -> None:
        if self.study_date and not DICOM_DATE_RANGE.match(self.study_date):
            raise ConfigError(f"[pacs.query] study_date = {self.study_date!r} is not a DICOM date range "
                              "(YYYYMMDD, YYYYMMDD-YYYYMMDD, YYYYMMDD- or -YYYYMMDD)")

    def study_filters(self) -> dict[str, str]:
        filters = {"ModalitiesInStudy": self.modality, "StudyDescription": self.study_description,
                   "StudyDate": self.study_date}
        return {key: value for key, value in filters.items() if value}


@dataclass(frozen=True)
class PacsConfig:
    source: PacsEndpoint = field(default_factory=PacsEndpoint)
    query: PacsQuery = field(default_factory=PacsQuery)
    destination: PacsEndpoint | None = None  # None: synthetic series go back to the source PACS


def pacs_config_from_dict(table: dict[str, Any], source_protocol: str, where: str) -> PacsConfig:
    """Parse ``[pacs]`` (with its ``query`` and ``destination`` tables); ``source_protocol`` is [data] source."""
    table = dict(table)
    query = build_section(PacsQuery, _table(table.pop("query", {}), "pacs.query", where), "pacs.query", where)
    destination = table.pop("destination", None)
    endpoint = build_section(PacsEndpoint, table, "pacs", where)
    if endpoint.protocol and endpoint.protocol != source_protocol:
        raise ConfigError(f"{where}: [pacs] protocol = {endpoint.protocol!r} but [data] source = "
                          f"{source_protocol!r}; remove protocol from [pacs] ([data] source decides)")
    if source_protocol in PROTOCOLS:
        endpoint = replace(endpoint, protocol=source_protocol)
        endpoint.require(source_protocol, f"{where}: [data] source = {source_protocol!r}: [pacs]")
    if destination is not None:
        destination = build_section(PacsEndpoint, _table(destination, "pacs.destination", where),
                                    "pacs.destination", where)
        if not destination.protocol:
            raise ConfigError(f"{where}: [pacs.destination] needs protocol = \"dicomweb\" or \"dimse\"")
        destination.require(destination.protocol, f"{where}: [pacs.destination]")
    return PacsConfig(endpoint, query, destination)


def _table(value: Any, name: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    return value
