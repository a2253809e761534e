"""Which meddiff code is running: its version and a hash of its source files.

A site pins the hash it approved (``[trust] app_hash`` in site.toml); the coordinator announces its own in every
message; the site refuses a round when either differs (client/site_guard.py). The ClientApp a SuperNode runs is
imported from the site's own installation (``meddiff.client.deploy_app``), not from the app bundle the coordinator
ships, so the hash checked is the code that touches the site's data.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import messages

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# the code of a federated run: what the ClientApp and ServerApp import (not the CLI, the task commands or the
# simulation tooling, which never run inside a round)
SOURCE_FOLDERS = ("client", "common", "common/data", "common/diffusion", "common/latent", "common/training", "privacy",
                  "server")


def app_version() -> str:
    try:
        return version("meddiff")
    except PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def app_hash() -> str:
    """SHA-256 over the relative path and bytes of every .py file in SOURCE_FOLDERS."""
    digest = hashlib.sha256()
    for folder in SOURCE_FOLDERS:
        for path in sorted((PACKAGE_ROOT / folder).glob("*.py")):
            digest.update(str(path.relative_to(PACKAGE_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def app_identity() -> dict[str, str]:
    return {messages.APP_VERSION: app_version(), messages.APP_HASH: app_hash()}
