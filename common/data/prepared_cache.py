"""A site's prepared training tensors, cached on the site's own disk.

Why: on the deployment engine every message starts a fresh ClientApp process, which would otherwise read and
prepare the whole archive again every round (seconds for the phantom, minutes for a hospital's DICOM folders).
The cache is derived patient data: it stays at the site, in a folder only the site's user can read, and is
keyed by the data config, the resolution, the meddiff data-format version and the name, size and modification
time of every input file, so any change to the archive or the config re-reads it. A corrupt or foreign cache
file is ignored (and rewritten), never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..config import DataConfig
from ..schema import ChannelSchema
from .tensors import TrainingTensors
from .training_set import PHANTOM, TrainingSet, load_training_set

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # bump when preparation changes what the same files and config produce


def _file_listing(source: str) -> list[tuple[str, int, int]]:
    root = Path(source)
    if root.is_file():
        stat = root.stat()
        return [(root.name, stat.st_size, stat.st_mtime_ns)]
    listing = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            stat = path.stat()
            listing.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return sorted(listing)


def data_fingerprint(source: str) -> str:
    """A short identity of the data folder (file names, sizes, times): it changes when a file is added, removed or
    rewritten. For `meddiff site status`; it reads no pixel."""
    if source == PHANTOM:
        return "built-in phantom"
    if not Path(source).exists():
        return f"{source} is missing"
    files = _file_listing(source)
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
    return f"{len(files)} files, {sum(size for _, size, _ in files) / 1e6:.1f} MB, listing sha256 {digest}"


def cache_key(source: str, config: DataConfig, resolution: int) -> str:
    """Changes whenever the prepared tensors could change."""
    files = [] if source == PHANTOM else _file_listing(source)
    described = json.dumps({"version": CACHE_VERSION, "source": str(source), "config": asdict(config),
                            "resolution": resolution, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(described.encode()).hexdigest()


def _read(path: Path, key: str) -> TrainingSet | None:
    try:
        state, meta = load_checkpoint(path)
    except CheckpointError as error:
        log.warning("ignoring the prepared-data cache %s (%s); it will be rebuilt", path, error)
        return None
    if meta.get("key") != key:
        return None
    tensors = TrainingTensors(ChannelSchema.from_dict(meta["schema"]), state["images"], state["available"],
                              state["labels"], state.get("patients"))
    return TrainingSet(tensors, int(meta["resolution"]), str(meta["source"]), int(meta["studies"]),
                       str(meta.get("patient_ids", "")))


def load_training_set_cached(source: str, config: DataConfig, resolution: int, cache_dir: str | Path) -> TrainingSet:
    """``load_training_set(source, config, resolution)``, from ``cache_dir`` when nothing changed since."""
    key = cache_key(source, config, resolution)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"prepared-{resolution}px.pt"
    if path.exists() and (cached := _read(path, key)) is not None:
        log.info("prepared data from the cache %s (%d examples)", path, len(cached.tensors))
        return cached
    training = load_training_set(source, config, resolution)
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tensors = training.tensors
    state = {"images": tensors.images, "available": tensors.available, "labels": tensors.labels}
    if tensors.patients is not None:
        state["patients"] = tensors.patients
    save_checkpoint(path, state, {"key": key, "schema": tensors.schema.to_dict(), "resolution": training.resolution,
                                  "source": training.source, "studies": training.studies,
                                  "patient_ids": training.patient_ids})
    os.chmod(path, 0o600)
    return training
