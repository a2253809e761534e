"""The site's model store: every global model the coordinator delivered, with the run's metadata.

    STATE/models/<run>-round-<NNNN>.pt   a meddiff checkpoint (global weights + EMA): every task command reads it
    STATE/models/models.jsonl            one line per model: file, run, round, final, sites, start, privacy, sha256

Task commands default to the newest model here (`meddiff segment --data ...` needs no --model). Files are written
atomically, and the index line only after its file is on disk, so a crash never leaves a listed model missing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import torch

from ..common.checkpoint import file_sha256, save_checkpoint
from ..common.jsonl import append_json_line, read_json_lines

INDEX = "models.jsonl"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "run"


class ModelStore:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def save(self, weights: dict[str, torch.Tensor], ema: dict[str, torch.Tensor], model_meta: dict,
             delivery: dict, model_state: dict | None = None) -> Path:
        """Store one delivered model; ``delivery`` holds run, round, final, sites, privacy, metrics;
        ``model_state`` what the file holds beside the weights (a latent model's autoencoder)."""
        path = self.folder / f"{_safe(str(delivery['run']))}-round-{int(delivery['round']):04d}.pt"
        save_checkpoint(path, {"model": weights, "ema": ema, "step": int(delivery["round"]), **(model_state or {})},
                        {**model_meta, "round": int(delivery["round"]), "delivery": delivery})
        line = {"file": path.name, "received": time.time(), "sha256": file_sha256(path),
                **{k: delivery.get(k) for k in ("run", "round", "rounds", "final", "sites", "initial_model", "trained",
                                                "privacy", "metrics")}}
        append_json_line(self.folder / INDEX, line)
        return path

    def entries(self) -> list[dict]:
        """Stored models, oldest first; lines whose file is gone or unreadable are left out."""
        return [{**entry, "path": str(self.folder / entry["file"])}
                for entry in read_json_lines(self.folder / INDEX) if (self.folder / entry["file"]).is_file()]

    def newest(self) -> Path | None:
        entries = self.entries()
        return Path(entries[-1]["path"]) if entries else None
