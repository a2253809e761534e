"""A trained model, ready for the tasks: the network (EMA weights by default), its schedule, schema and size."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_checkpoint
from ..schema import ChannelSchema
from .fast_paths import apply_layout, switch_on
from .model import ConditionalDenoiser, ModelConfig
from .schedules import Schedule, make_schedule


@dataclass
class LoadedModel:
    model: ConditionalDenoiser
    schedule: Schedule
    schema: ChannelSchema
    resolution: int
    meta: dict
    device: torch.device


def model_config_from_dict(values: dict) -> ModelConfig:
    """ModelConfig from checkpoint JSON (lists back to tuples)."""
    return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def model_meta(schema: ChannelSchema, model: ModelConfig, train_config, resolution: int, **extra) -> dict:
    """The metadata every model file carries (``meddiff train`` checkpoints and the server's round checkpoints)
    so that :func:`load_model` can rebuild the network. train_config: the ``TrainConfig`` dataclass."""
    return {"kind": "meddiff-model", "schema": schema.to_dict(), "model_config": asdict(model),
            "train_config": asdict(train_config), "schedule": train_config.schedule, "resolution": resolution,
            **extra}


def open_model_checkpoint(path: str | Path) -> tuple[dict, dict, ChannelSchema, ModelConfig]:
    """(state, meta, schema, model config) of a model file; refuses files that are not models."""
    state, meta = load_checkpoint(path)
    if meta.get("kind") != "meddiff-model":
        raise CheckpointError(f"{path}: not a model checkpoint (kind {meta.get('kind')!r})")
    return state, meta, ChannelSchema.from_dict(meta["schema"]), model_config_from_dict(meta["model_config"])


def load_model(path: str | Path, *, use_ema: bool = True, device: str | torch.device | None = None) -> LoadedModel:
    """Load a checkpoint written by ``meddiff train`` (or a global model saved by the server)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state, meta, schema, model_config = open_model_checkpoint(path)
    model = ConditionalDenoiser(schema, model_config)
    weights = state["ema"] if use_ema and "ema" in state else state["model"]
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model the checkpoint describes ({e})") from None
    model.to(device).eval()
    # SDPA attention on CUDA: same numbers, faster; channels-last measured slower here (benchmarks/gpu.py)
    apply_layout(model, model_config.spatial_dims, flash_attention=switch_on("auto", device), channels_last=False)
    resolution = int(meta.get("resolution", 0))
    if resolution <= 0:
        raise CheckpointError(f"{path}: the checkpoint does not record the image resolution it was trained at")
    return LoadedModel(model, make_schedule(meta["schedule"]), schema, resolution, meta, device)
