"""What every site must agree on to train one model: schema, resolution, network and diffusion, recipe.

The coordinator sends it with every training message (JSON strings in the ConfigRecord, under the keys of
common/messages.py), so a site never trains a model it was not asked for, and the checkpoint of every round
records it. It carries no site's hardware switches (``RuntimeSpec``): each site keeps its own.

A latent run (latent diffusion, stage 2) trains the denoiser on the latents of a stage-1 autoencoder: ``schema``
and ``resolution`` are then the latents' (what the network is built for), ``latent`` is the autoencoder with the
run's pixel schema and size (what a site prepares its images at, and encodes), and every message carries the
autoencoder file's bytes, which a site accepts only if they hash to the SHA-256 the run names.

A stage-1 run (``autoencoder`` set) trains that autoencoder on the sites' pixels instead of a denoiser: its
weights are what the messages carry, and ``schema`` and ``resolution`` are the pixel ones.
"""

from __future__ import annotations

import json

import torch
from dataclasses import asdict, dataclass, field, replace

from . import messages
from .config import ConfigError
from .errors import CheckpointError
from .diffusion.loading import latent_record, model_meta
from .latent.autoencoder import (AutoencoderFile, AutoencoderSpec, autoencoder_from_bytes, build_autoencoder,
                                 load_autoencoder)
from .latent.stage import AutoencoderStage
from .latent.training import AutoencoderRecipe
from .latent.codec import latent_schema_of
from .diffusion.model import ConditionalDenoiser
from .schema import ChannelSchema
from .specs import ModelSpec, RecipeSpec, spec_from_dict
from .wire import layout_of, trained_mask


def latent_run(spec: "RunSpec", autoencoder: str, where: str) -> "RunSpec":
    """``spec`` as a latent run on the autoencoder file ``autoencoder`` ("" = the pixel run as it is)."""
    if not autoencoder:
        return spec
    try:
        loaded = load_autoencoder(autoencoder)
    except CheckpointError as error:
        raise ConfigError(f"{where}: {error}") from None
    return spec.with_autoencoder(loaded, where)


@dataclass(frozen=True)
class RunSpec:
    schema: ChannelSchema
    resolution: int
    model: ModelSpec = ModelSpec()
    recipe: RecipeSpec = RecipeSpec()
    data_source: str = "federated"
    latent: AutoencoderFile | None = field(default=None, compare=False)  # a latent run's stage-1 autoencoder
    autoencoder: AutoencoderSpec | None = None  # a stage-1 run: the autoencoder the sites train
    autoencoder_recipe: AutoencoderRecipe | None = None
    depth: int = 0  # a 3D run's slices where they differ from ``resolution`` (anisotropic volumes); 0: cubes

    def stage_one(self, stage: AutoencoderStage) -> "RunSpec":
        """The stage-1 run of this pixel run: the sites train ``stage``'s autoencoder on the run's channels."""
        if self.latent is not None:
            raise ConfigError("a latent run cannot train its own autoencoder: name no autoencoder file in stage 1")
        return replace(self, autoencoder=stage.network(self.model.spatial_dims),
                       autoencoder_recipe=stage.recipe(self.recipe.seed))

    def network(self) -> torch.nn.Module:
        """The network the run trains: the denoiser, or in stage 1 the autoencoder."""
        if self.autoencoder is not None:
            return build_autoencoder(self.autoencoder)
        return ConditionalDenoiser(self.schema, self.model)

    def autoencoder_file(self, weights: dict, scale: float, record: dict) -> AutoencoderFile:
        """A stage-1 run's round as a stage-1 file (what `meddiff train-autoencoder` writes)."""
        return AutoencoderFile(self.autoencoder, self.schema, self.resolution, scale, weights, record=record,
                               depth=self.depth)

    @property
    def data_schema(self) -> ChannelSchema:
        """The channels a site's images are aligned to (for a latent run, before they are encoded)."""
        return self.latent.schema if self.latent is not None else self.schema

    @property
    def data_resolution(self) -> int:
        """The size a site prepares its images at (for a latent run, the autoencoder's)."""
        return self.latent.resolution if self.latent is not None else self.resolution

    @property
    def data_depth(self) -> int:
        """The slices a site prepares 3D volumes at (0: as many as ``data_resolution``)."""
        return self.latent.depth if self.latent is not None else self.depth

    def with_autoencoder(self, autoencoder: AutoencoderFile, where: str) -> "RunSpec":
        """This pixel run as a latent run on ``autoencoder``'s latents; a schema, size or dimension the
        autoencoder was not trained for is refused with both values named."""
        if list(self.schema.channels) != list(autoencoder.schema.channels):
            raise ConfigError(f"{where}: the autoencoder was trained on channels {list(autoencoder.schema.channels)}, "
                              f"the run's [schema] channels are {list(self.schema.channels)}: give the run the "
                              "autoencoder's channels, in its order, or train an autoencoder on the run's")
        if self.resolution != autoencoder.resolution:
            raise ConfigError(f"{where}: the autoencoder was trained at {autoencoder.resolution} px, the run's "
                              f"[schema] resolution is {self.resolution}: set resolution = {autoencoder.resolution}")
        if self.depth != autoencoder.depth:
            raise ConfigError(f"{where}: the autoencoder was trained at depth {autoencoder.depth or 'cubic'}, the "
                              f"run's [schema] depth is {self.depth or 'cubic'}: set depth = {autoencoder.depth}")
        if not (autoencoder.record or {}).get("scale_measured", True):
            raise ConfigError(f"{where}: this stage-1 round was not evaluated, so its latent scale is unknown: use a "
                              "round the sites evaluated (the last one always is)")
        if self.model.spatial_dims != autoencoder.spec.spatial_dims:
            raise ConfigError(f"{where}: the autoencoder is {autoencoder.spec.spatial_dims}D, the run's [model] "
                              f"spatial_dims is {self.model.spatial_dims}: make them agree")
        pixel = replace(autoencoder, schema=self.schema)  # the run's class names and mask labels
        return replace(self, schema=latent_schema_of(self.schema, autoencoder.spec.latent_channels),
                       resolution=self.resolution // autoencoder.spec.factor,
                       depth=self.depth // autoencoder.spec.factor, latent=pixel)

    def to_config(self) -> dict[str, str | int]:
        """Flat str/int values, as a Flower ConfigRecord holds them (a latent run's autoencoder by its record
        only: see ``message_config``)."""
        config = {messages.SCHEMA: json.dumps(self.schema.to_dict()), messages.RESOLUTION: self.resolution,
                  messages.MODEL_SPEC: json.dumps(asdict(self.model)), messages.RECIPE: json.dumps(asdict(self.recipe)),
                  messages.DATA_SOURCE: self.data_source}
        if self.depth:
            config[messages.DEPTH] = self.depth
        if self.latent is not None:
            config[messages.LATENT] = json.dumps(latent_record(self.latent))
        if self.autoencoder is not None:
            config[messages.STAGE_ONE] = json.dumps({"network": asdict(self.autoencoder),
                                                     "recipe": asdict(self.autoencoder_recipe)})
        return config

    def message_config(self) -> dict[str, str | int | bytes]:
        """What every message of the run carries: ``to_config`` and, for a latent run, the autoencoder file."""
        return {**self.to_config(), **({messages.AUTOENCODER: self.latent.raw} if self.latent is not None else {})}

    @classmethod
    def from_config(cls, config) -> "RunSpec":
        """The spec of a message, strictly: a key of another version of meddiff is refused by name."""
        where = "the coordinator's run spec"
        spec = cls(ChannelSchema.from_dict(json.loads(config[messages.SCHEMA])), int(config[messages.RESOLUTION]),
                   spec_from_dict(ModelSpec, json.loads(config[messages.MODEL_SPEC]), where),
                   spec_from_dict(RecipeSpec, json.loads(config[messages.RECIPE]), where),
                   str(config[messages.DATA_SOURCE]), depth=int(config.get(messages.DEPTH, 0)))
        if messages.STAGE_ONE in config:
            stage = json.loads(config[messages.STAGE_ONE])
            return replace(spec, autoencoder=spec_from_dict(AutoencoderSpec, stage["network"], where),
                           autoencoder_recipe=spec_from_dict(AutoencoderRecipe, stage["recipe"], where))
        if messages.LATENT not in config:
            return spec
        record = json.loads(config[messages.LATENT])
        if not config.get(messages.AUTOENCODER):
            raise ValueError(f"{where}: a latent run's message without its autoencoder file")
        received = autoencoder_from_bytes(bytes(config[messages.AUTOENCODER]), "the coordinator's autoencoder",
                                          str(record.get("sha256", "")) or "missing")
        return replace(spec, latent=replace(received, schema=ChannelSchema.from_dict(record["schema"])))

    def model_meta(self) -> dict:
        """Checkpoint metadata in the format ``load_model`` reads."""
        extra = {"latent": latent_record(self.latent)} if self.latent is not None else {}
        if self.depth:
            extra["depth"] = self.depth
        return model_meta(self.schema, self.model, self.recipe, self.resolution, data={"source": self.data_source},
                          **extra)

    def model_state(self) -> dict:
        """What a model file of this run holds beside its weights: a latent model carries its autoencoder."""
        return {"autoencoder": self.latent.weights} if self.latent is not None else {}

    def weight_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes of the model's weights, in state-dict order (see ``common.wire``)."""
        return layout_of(self.network().state_dict())

    def trained_mask(self, layout: list[tuple[str, tuple[int, ...]]] | None = None):
        """Where in the packed vector a run that trains a part of the network ([train] trainable) changes
        anything: what a site's reply carries (common/wire.py). None when every parameter trains. ``layout``:
        the weight layout when the caller has it already (making it builds the network)."""
        if self.recipe.trainable == "all":
            return None
        from .training.trainable import is_trained

        return trained_mask(layout or self.weight_layout(), lambda name: is_trained(name, self.recipe.trainable))
