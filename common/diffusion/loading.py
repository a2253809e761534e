"""A trained model, ready for the tasks: the network (EMA weights by default), its schedule, schema and size.

A latent model (common/latent/) carries its autoencoder in the same file: it loads with a codec, and its schema and
resolution are the pixel ones the tasks read and write, while the denoiser works on latents.

Every model file carries its ``ModelSpec`` (network and diffusion) and ``RecipeSpec`` in its metadata. Files
written before the specs were split (``model_config`` + ``train_config``) are read as well: a site's store keeps
models delivered by earlier versions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import ConfigError
from ..data.transforms import spatial_shape
from ..schema import ChannelSchema
from ..latent.autoencoder import AutoencoderFile, from_meta
from ..latent.codec import LatentCodec
from ..specs import ModelSpec, RecipeSpec, spec_from_dict
from .fast_paths import apply_layout, switch_on
from .denoiser import Denoiser
from .model import ConditionalDenoiser
from .schedules import Schedule, make_schedule

KIND = "meddiff-model"
RECIPE_KEYS = {"batch_size", "learning_rate", "warmup_steps", "weight_decay", "grad_clip", "ema_decay", "p_condition",
               "p_uncond", "seed"}


@dataclass
class LoadedModel:
    denoiser: Denoiser  # the network and its schedule; keeps its compiled network and CUDA graphs across calls
    schema: ChannelSchema
    resolution: int
    meta: dict
    device: torch.device
    codec: LatentCodec | None = None  # a latent model's autoencoder; schema and resolution are then the pixel ones
    depth: int = 0  # a 3D model's slices where they differ from ``resolution`` (anisotropic volumes); 0: a cube

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The pixel grid the model's images have: (resolution,) * dims, or (depth, resolution, resolution)."""
        return spatial_shape(self.resolution, self.depth, self.spec.spatial_dims)

    @property
    def model(self) -> ConditionalDenoiser:
        return self.denoiser.model

    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec


def model_meta(schema: ChannelSchema, model: ModelSpec, recipe: RecipeSpec, resolution: int, **extra) -> dict:
    """The metadata every model file carries (``meddiff train`` checkpoints and the server's round checkpoints)
    so that :func:`load_model` can rebuild the network."""
    return {"kind": KIND, "schema": schema.to_dict(), "model_spec": asdict(model), "recipe": asdict(recipe),
            "resolution": resolution, **extra}


def specs_of(meta: dict, where: str) -> tuple[ModelSpec, RecipeSpec]:
    """(ModelSpec, RecipeSpec) of a model file's metadata, current or from before the split."""
    try:
        if "model_spec" in meta:
            return (spec_from_dict(ModelSpec, meta["model_spec"], where),
                    spec_from_dict(RecipeSpec, meta["recipe"], where))
        old = meta.get("train_config", {})
        network = {**meta["model_config"], "schedule": meta.get("schedule", old.get("schedule", "ddpm")),
                   "noise": old.get("noise", "gaussian")}
        return (spec_from_dict(ModelSpec, network, where),
                spec_from_dict(RecipeSpec, {k: v for k, v in old.items() if k in RECIPE_KEYS}, where))
    except (KeyError, ConfigError, TypeError) as error:
        raise CheckpointError(f"{where}: the model description in the file cannot be read ({error})") from None


def latent_record(autoencoder: AutoencoderFile) -> dict:
    """The ``latent`` record of a latent model file: its autoencoder's description and the SHA-256 of the
    stage-1 file it came from (the weights themselves are in the file's state, under ``autoencoder``)."""
    record = autoencoder.meta()
    record.pop("kind")
    return {**record, "sha256": autoencoder.sha256}


def latent_of(state: dict, meta: dict, where: str) -> AutoencoderFile | None:
    """The autoencoder a latent model file carries; None for a pixel model."""
    if "latent" not in meta:
        return None
    if "autoencoder" not in state:
        raise CheckpointError(f"{where}: a latent model without its autoencoder's weights; the file is incomplete")
    return from_meta(meta["latent"], state["autoencoder"], where)


def open_model_checkpoint(path: str | Path) -> tuple[dict, dict, ChannelSchema, ModelSpec, RecipeSpec]:
    """(state, meta, schema, model spec, recipe) of a model file; refuses files that are not models."""
    state, meta = load_checkpoint(path)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{path}: not a model checkpoint (kind {meta.get('kind')!r})")
    return (state, meta, ChannelSchema.from_dict(meta["schema"]), *specs_of(meta, str(path)))


def load_model(path: str | Path, *, use_ema: bool = True, device: str | torch.device | None = None,
               latent_ok: bool = False, task: str = "this task") -> LoadedModel:
    """Load a checkpoint written by ``meddiff train`` (or a global model saved by the server).

    latent_ok: the caller handles latent models (through ``LoadedModel.codec``); for any other caller a latent
    model is refused by name rather than fed pixels it was not trained on."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state, meta, schema, spec, _ = open_model_checkpoint(path)
    autoencoder = latent_of(state, meta, str(path))
    if autoencoder is not None and not latent_ok:
        raise CheckpointError(f"{path} is a latent diffusion model; {task} runs on pixel models only so far "
                              "(`meddiff generate` runs on both); pass a model trained without --autoencoder")
    model = ConditionalDenoiser(schema, spec)
    weights = state["ema"] if use_ema and "ema" in state else state["model"]
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model the checkpoint describes ({e})") from None
    model.to(device).eval()
    # SDPA attention on CUDA: same numbers, faster; channels-last measured slower here (benchmarks/gpu.py)
    apply_layout(model, spec.spatial_dims, flash_attention=switch_on("auto", device), channels_last=False)
    resolution = int(meta.get("resolution", 0))
    if resolution <= 0:
        raise CheckpointError(f"{path}: the checkpoint does not record the image resolution it was trained at")
    denoiser = Denoiser(model, make_schedule(spec.schedule))
    if autoencoder is None:
        return LoadedModel(denoiser, schema, resolution, meta, device, depth=int(meta.get("depth", 0)))
    codec = LatentCodec(autoencoder, device)
    return LoadedModel(denoiser, codec.schema, autoencoder.resolution, meta, device, codec, autoencoder.depth)
