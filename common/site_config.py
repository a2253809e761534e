"""site.toml: everything a site admin configures, read by the one strict loader (common/config.py).

    site_id = "hospital-a"
    [data]     where the images are and how to read them (DataConfig)
    [privacy]  DP-SGD at this site, per patient or per example (PrivacyConfig)
    [trust]    which meddiff code this site approved (TrustConfig)
    [runtime]  this site's hardware switches (common/specs.py RuntimeSpec; never set by the coordinator)
    [tracking] the site's own experiment tracker (off by default; nothing of it goes to the coordinator)
    [pacs]     the site's PACS when [data] source is "dicomweb" or "dimse", and where synthetic series go
               (common/pacs_config.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import (ConfigError, DataConfig, PrivacyConfig, SiteTrackingConfig, TrustConfig, build_section,
                     data_config_from_dict, read_toml)
from .pacs_config import PacsConfig, pacs_config_from_dict
from .specs import RuntimeSpec


@dataclass(frozen=True)
class SiteConfig:
    """Everything a site admin configures."""

    site_id: str = "site"
    data: DataConfig = field(default_factory=DataConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    pacs: PacsConfig | None = None  # None: no [pacs] table
    tracking: SiteTrackingConfig = field(default_factory=SiteTrackingConfig)


def load_site_config(path: str | Path) -> SiteConfig:
    """Read a site.toml. Raises ConfigError naming the file and the key on any mistake."""
    path = Path(path)
    raw = read_toml(path, {"site_id", "data", "privacy", "trust", "runtime", "pacs", "tracking"},
                    "config file not found; pass the path of your site.toml")
    source = str(path)
    data = data_config_from_dict(raw.get("data", {}), source)
    if data.source != "folder" and "pacs" not in raw:
        raise ConfigError(f"{source}: [data] source = {data.source!r} needs a [pacs] table (the PACS to fetch from "
                          "and [pacs.query]); the site.toml `meddiff site init` writes shows one")
    if data.source != "folder" and data.path:
        raise ConfigError(f"{source}: [data] path is set, but source = {data.source!r} reads the PACS into the "
                          "site's cache; remove path (or set source = \"folder\")")
    pacs = pacs_config_from_dict(raw["pacs"], data.source, source) if "pacs" in raw else None
    return SiteConfig(site_id=str(raw.get("site_id", "site")), data=data,
                      privacy=build_section(PrivacyConfig, raw.get("privacy", {}), "privacy", source),
                      trust=build_section(TrustConfig, raw.get("trust", {}), "trust", source),
                      runtime=build_section(RuntimeSpec, raw.get("runtime", {}), "runtime", source), pacs=pacs,
                      tracking=build_section(SiteTrackingConfig, raw.get("tracking", {}), "tracking", source))
