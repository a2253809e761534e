"""site.toml: everything a site admin configures, read by the one strict loader (common/config.py).

    site_id = "hospital-a"
    [data]     where the images are and how to read them (DataConfig)
    [privacy]  DP-SGD at this site, per patient or per example (PrivacyConfig)
    [trust]    which meddiff code this site approved (TrustConfig)
    [runtime]  this site's hardware switches (common/specs.py RuntimeSpec; never set by the coordinator)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import DataConfig, PrivacyConfig, TrustConfig, build_section, data_config_from_dict, read_toml
from .specs import RuntimeSpec


@dataclass(frozen=True)
class SiteConfig:
    """Everything a site admin configures."""

    site_id: str = "site"
    data: DataConfig = field(default_factory=DataConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)


def load_site_config(path: str | Path) -> SiteConfig:
    """Read a site.toml. Raises ConfigError naming the file and the key on any mistake."""
    path = Path(path)
    raw = read_toml(path, {"site_id", "data", "privacy", "trust", "runtime"},
                    "config file not found; pass the path of your site.toml")
    source = str(path)
    return SiteConfig(site_id=str(raw.get("site_id", "site")), data=data_config_from_dict(raw.get("data", {}), source),
                      privacy=build_section(PrivacyConfig, raw.get("privacy", {}), "privacy", source),
                      trust=build_section(TrustConfig, raw.get("trust", {}), "trust", source),
                      runtime=build_section(RuntimeSpec, raw.get("runtime", {}), "runtime", source))
