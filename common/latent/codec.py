"""Between pixels and latents: the schema's channels, each encoded by the shared autoencoder, side by side.

A pixel example (C, H, W) becomes (C * L, H / f, W / f): channel c's L latent channels are named ``z0.c`` ...
``z{L-1}.c`` in the latent schema, and are available exactly where channel c is. So the one denoiser, its loss,
channel masks, classes and classifier-free guidance work on latents unchanged: to the trainer a latent data set
is a data set of another schema and size. Latents are the posterior means (deterministic, so a site encodes its
data once), multiplied by the file's scale so that their spread is the pixel data's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.tensors import TrainingTensors
from ..schema import ChannelSchema
from .autoencoder import AutoencoderFile

Tensor = torch.Tensor
BATCH = 64  # images per autoencoder call: bounds memory at 256 px


def latent_channel_names(schema: ChannelSchema, latent_channels: int) -> tuple[str, ...]:
    return tuple(f"z{k}.{channel}" for channel in schema.channels for k in range(latent_channels))


def latent_schema_of(schema: ChannelSchema, latent_channels: int) -> ChannelSchema:
    """The schema the denoiser is trained on (no channel of it is a mask: masks are encoded like images)."""
    return ChannelSchema(latent_channel_names(schema, latent_channels), schema.class_names)


@dataclass
class LatentCodec:
    file: AutoencoderFile
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        self.network = self.file.network().to(self.device)
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)

    @property
    def schema(self) -> ChannelSchema:
        """The pixel schema: what the tasks read and write."""
        return self.file.schema

    @property
    def latent_channels(self) -> int:
        return self.file.spec.latent_channels

    @property
    def latent_schema(self) -> ChannelSchema:
        return latent_schema_of(self.schema, self.latent_channels)

    def latent_size(self, resolution: int) -> int:
        if resolution % self.file.spec.factor:
            raise ValueError(f"{resolution} px does not divide by the autoencoder's factor {self.file.spec.factor}; "
                             f"use a multiple of {self.file.spec.factor}")
        return resolution // self.file.spec.factor

    def rows(self, channel: int) -> slice:
        """Where pixel channel ``channel``'s latent channels are in a latent tensor."""
        return slice(channel * self.latent_channels, (channel + 1) * self.latent_channels)

    def latent_available(self, available: Tensor) -> Tensor:
        """(B, C) pixel availability -> (B, C * L)."""
        return available.repeat_interleave(self.latent_channels, dim=1)

    @torch.no_grad()
    def encode(self, images: Tensor, available: Tensor | None = None) -> Tensor:
        """(B, C, *spatial) in [-1, 1] -> (B, C * L, *spatial / f), zero where a channel is not available."""
        b, c = images.shape[:2]
        flat = images.reshape(b * c, 1, *images.shape[2:])
        means = torch.cat([self.network.encode(flat[i:i + BATCH].to(self.device))[0]
                           for i in range(0, len(flat), BATCH)])
        latents = (means * self.file.scale).reshape(b, c * self.latent_channels, *means.shape[2:])
        if available is not None:
            latents = latents * self.latent_available(available).to(latents).reshape(
                latents.shape[:2] + (1,) * (latents.dim() - 2))
        return latents

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """(B, C * L, *spatial) -> (B, C, *spatial * f) in [-1, 1]."""
        b, c = latents.shape[0], latents.shape[1] // self.latent_channels
        flat = latents.reshape(b * c, self.latent_channels, *latents.shape[2:]).to(self.device) / self.file.scale
        images = torch.cat([self.network.decode(flat[i:i + BATCH]) for i in range(0, len(flat), BATCH)])
        return images.reshape(b, c, *images.shape[2:]).clamp(-1.0, 1.0)

    def encode_tensors(self, data: TrainingTensors) -> TrainingTensors:
        """A data set in the latent schema (labels and patients kept, on the CPU)."""
        latents = self.encode(data.images, data.available).cpu()
        return TrainingTensors(self.latent_schema, latents, self.latent_available(data.available), data.labels,
                               data.patients)
