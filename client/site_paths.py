"""What a site keeps beside its site.toml, in ``.meddiff-site/``: one place that names every file.

    .meddiff-site/flwr/... (Flower's home)     prepared/<site>/ (prepared-data cache)
    .meddiff-site/privacy/<site>.sqlite        the privacy ledger
    .meddiff-site/audit.jsonl                  the audit log (client/audit.py)
    .meddiff-site/models/                      delivered global models (client/model_store.py)
    .meddiff-site/status.json                  the last message from the coordinator (for `meddiff site status`)
    .meddiff-site/daemon.json                  the running daemon: pid, coordinator, state
    .meddiff-site/worker.sock, worker.key      the site worker's socket and its key (client/site_worker.py)
"""

from __future__ import annotations

import json
from pathlib import Path

NO_SITE_CONFIG = ("this SuperNode has no site config: start it with "
                  "--node-config 'site-config=\"/path/to/site.toml\"' (or use `meddiff site start`)")


def site_state_dir(site_config: str | Path) -> Path:
    return Path(site_config).resolve().parent / ".meddiff-site"


def ledger_path(state_dir: Path, site_id: str) -> Path:
    return state_dir / "privacy" / f"{site_id}.sqlite"


def audit_path(state_dir: Path) -> Path:
    return state_dir / "audit.jsonl"


def models_dir(state_dir: Path) -> Path:
    return state_dir / "models"


def status_path(state_dir: Path) -> Path:
    return state_dir / "status.json"


def daemon_path(state_dir: Path) -> Path:
    return state_dir / "daemon.json"


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
