"""Checkpoint files that load without unpickling arbitrary objects.

One file holds tensors (nested dicts of tensors, numbers and strings, as state dicts are) and a JSON metadata
string. It is written to a temporary file and renamed, so a crash never leaves a half-written checkpoint, and
read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers: a
checkpoint received from another site cannot run code on this machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError  # noqa: F401 (raised here; cli.py catches it without importing torch)

FORMAT = "meddiff-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Atomically write ``state`` (state dicts, tensors, numbers) and ``meta`` (JSON-serialisable) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "meta_json": json.dumps(meta, default=str), **state}
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict]:
    """(state, meta) of a checkpoint written by :func:`save_checkpoint`; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass the model.pt written by `meddiff train`")
    return _read_payload(path, str(path), map_location)


def load_checkpoint_bytes(raw: bytes, where: str) -> tuple[dict[str, Any], dict]:
    """(state, meta) of a checkpoint file's bytes (one received in a message); ``where`` names it in errors."""
    return _read_payload(io.BytesIO(raw), where, "cpu")


def _read_payload(source, where: str, map_location) -> tuple[dict[str, Any], dict]:
    try:
        payload = torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run the file's code: never say that
        raise CheckpointError(f"{where}: not a meddiff checkpoint, or it holds objects other than tensors; "
                              "refused, because loading those could run code from the file") from None
    except (RuntimeError, EOFError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{where}: not a readable checkpoint ({reason}); "
                              "it may be truncated or not a meddiff checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a meddiff checkpoint (no '{FORMAT}' marker)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"{where}: checkpoint version {payload['version']} is newer than this meddiff "
                              f"reads ({VERSION}); upgrade meddiff")
    meta = json.loads(payload.pop("meta_json"))
    for key in ("format", "version"):
        payload.pop(key)
    return payload, meta


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (model files are recorded and pinned by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
