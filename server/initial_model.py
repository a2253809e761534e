"""The model a federation starts from: a file (for example pretrained on public data with `meddiff train`),
identified by its SHA-256, mapped onto the run's channel schema by name.

The hash travels with the run: in run.json, every round checkpoint, every training instruction (so a site that
pins the starting models it accepts in `[trust] initial_models` refuses any other) and every delivered model.
A starting model with another network or resolution is refused with both values named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..common.checkpoint import CheckpointError, file_sha256
from ..common.config import ConfigError
from ..common.diffusion.loading import open_model_checkpoint
from ..common.diffusion.transfer import Transfer, transfer_weights
from ..common.run_spec import RunSpec


@dataclass(frozen=True)
class InitialModel:
    path: str
    sha256: str
    transfer: Transfer

    def record(self) -> dict:
        """What run.json, checkpoints and delivered models say about the start."""
        t = self.transfer
        return {"file": Path(self.path).name, "sha256": self.sha256, "kept_channels": list(t.kept_channels),
                "added_channels": list(t.added_channels), "dropped_channels": list(t.dropped_channels)}


def load_initial_model(path: str | Path, spec: RunSpec, fresh: dict[str, torch.Tensor]) -> InitialModel:
    """The run's round-0 weights from the model file at ``path`` (its EMA weights when it has them), on the run's
    schema. Raises ConfigError naming the file and what differs."""
    try:
        state, meta, schema, model, _ = open_model_checkpoint(path)
    except CheckpointError as error:
        raise ConfigError(f"[federation] initial_model: {error}") from None
    theirs, ours = (meta.get("latent") or {}).get("sha256"), spec.latent.sha256 if spec.latent is not None else None
    if theirs != ours:
        raise ConfigError(f"[federation] initial_model {path} is {_space(theirs)}, the run is {_space(ours)}: start "
                          "from a model of the run's space and autoencoder, or from scratch")
    resolution = int(meta.get("resolution", 0))
    if resolution != spec.resolution:
        raise ConfigError(f"[federation] initial_model {path} was trained at {resolution} px, the run trains at "
                          f"{spec.resolution} px: start from a model of the run's resolution, or change the run's")
    depth = int(meta.get("depth", 0))
    if depth != spec.depth:
        raise ConfigError(f"[federation] initial_model {path} was trained at depth {depth or 'cubic'}, the run "
                          f"at depth {spec.depth or 'cubic'}: start from a model of the run's [schema] depth")
    if model != spec.model:
        differ = sorted(k for k, v in asdict(model).items() if asdict(spec.model)[k] != v)
        values = ", ".join(f"{k} {asdict(model)[k]!r} there, {asdict(spec.model)[k]!r} in the run" for k in differ)
        raise ConfigError(f"[federation] initial_model {path} has another network ({values}): give the run's "
                          "[model] the starting model's values, or start from scratch")
    try:
        transfer = transfer_weights(state["ema"] if "ema" in state else state["model"], schema, fresh, spec.schema)
    except ValueError as error:
        raise ConfigError(f"[federation] initial_model {path}: {error}") from None
    return InitialModel(str(path), file_sha256(path), transfer)


def _space(autoencoder_sha256: str | None) -> str:
    """Which space a model works in, for an error that names both."""
    if autoencoder_sha256 is None:
        return "a pixel-space model"
    return f"a latent model on autoencoder sha256 {autoencoder_sha256[:16]}..."
