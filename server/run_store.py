"""The coordinator's run directory: a checkpoint after every round, the model registry, per-round metrics.

    RUN_DIR/run.json                 settings, schema and model of the run (resume checks it is the same run)
    RUN_DIR/checkpoints/round-0003.pt  global weights, their EMA, strategy state, round (a meddiff model file:
                                     ``meddiff generate --model`` reads it)
    RUN_DIR/registry.jsonl           one line per saved model: round, sites, schema, metrics, path
    RUN_DIR/metrics.jsonl            one line per round: per-site training/evaluation metrics, rejections
    RUN_DIR/stopped.json             why a run ended before its last round (the central DP budget), when it did

Files are written atomically and the registry line is appended only after its checkpoint is on disk, so a crash
at any moment leaves the last complete round to resume from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..common.jsonl import append_json_line, read_json_lines


@dataclass
class RoundState:
    round: int
    weights: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    strategy: dict[str, dict[str, np.ndarray]]
    privacy: str = ""  # the central-DP accountant's state (JSON), so that a resumed run composes on top of it


class RunStore:
    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.checkpoints = self.dir / "checkpoints"

    def start(self, description: dict, *, resume: bool) -> None:
        """Create the run, or on resume check that ``description`` matches the run being resumed."""
        path = self.dir / "run.json"
        if path.exists() and not resume:
            raise CheckpointError(f"{self.dir} already holds a run; resume it (--resume {self.dir}) or choose "
                                  "another run directory (nothing was overwritten)")
        if resume:
            if not path.exists():
                raise CheckpointError(f"{self.dir}: no run to resume (run.json is missing)")
            saved = json.loads(path.read_text())
            if saved != json.loads(json.dumps(description, default=str)):
                changed = sorted(k for k in set(saved) | set(description) if saved.get(k) != description.get(k))
                raise CheckpointError(f"{self.dir}: the run config differs from the run being resumed in {changed}; "
                                      "resume with the same config")
            return
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(description, indent=2, default=str))

    def registry(self) -> list[dict]:
        return read_json_lines(self.dir / "registry.jsonl")

    def metrics(self) -> list[dict]:
        return read_json_lines(self.dir / "metrics.jsonl")

    def save_round(self, state: RoundState, model_meta: dict, entry: dict, round_metrics: dict,
                   model_state: dict | None = None) -> Path:
        """model_state: what the model file holds beside its weights (a latent model's autoencoder)."""
        path = self.checkpoints / f"round-{state.round:04d}.pt"
        strategy = {name: {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
                    for name, arrays in state.strategy.items()}
        save_checkpoint(path, {"model": state.weights, "ema": state.ema, "strategy": strategy, "step": state.round,
                                "privacy": state.privacy, **(model_state or {})},
                        {**model_meta, "step": state.round, "round": state.round, "registry": entry})
        append_json_line(self.dir / "metrics.jsonl", {"round": state.round, **round_metrics})
        append_json_line(self.dir / "registry.jsonl", {**entry, "round": state.round, "path": str(path)})
        return path

    def register_best(self, best_round: int, stopping: dict) -> dict:
        """Early stopping: register the best round's model again as the run's last, so that whatever reads the
        registry's last line (generation, delivery, the tracker, a resume) gets the best model. Returns that line."""
        entry = next(e for e in reversed(self.registry()) if e["round"] == best_round and "early_stopping" not in e)
        line = {**entry, "early_stopping": stopping}
        append_json_line(self.dir / "registry.jsonl", line)
        return line

    def mark_stopped(self, after_round: int, why: str) -> None:
        """The run ended after ``after_round`` of its rounds, for the reason ``why`` (the report says it)."""
        (self.dir / "stopped.json").write_text(json.dumps({"after_round": after_round, "why": why}))

    def stopped(self) -> dict | None:
        path = self.dir / "stopped.json"
        return json.loads(path.read_text()) if path.exists() else None

    def latest(self) -> RoundState | None:
        """The last round whose checkpoint and registry line were both written, or None."""
        for entry in reversed(self.registry()):
            try:
                state, _ = load_checkpoint(entry["path"])
            except CheckpointError:
                continue
            strategy = {name: {k: v.numpy() for k, v in arrays.items()} for name, arrays in state["strategy"].items()}
            return RoundState(int(state["step"]), state["model"], state["ema"], strategy, state.get("privacy", ""))
        return None
