"""A site's images prepared for a task on a given checkpoint, with the schema checks every sub-command needs.

The data is read and normalised exactly as for training (same loader, same percentile scaling, resized to the
checkpoint's resolution), then laid out in the checkpoint's channel order. A mask channel the checkpoint does
not model is kept aside as ground truth for evaluation (anomaly maps are scored against it); any other channel
the checkpoint does not know is an error, because the site would silently drop data it asked us to use.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..common.config import ConfigError, DataConfig
from ..common.data.tensors import TrainingTensors
from ..common.data.training_set import load_training_set
from ..common.diffusion.loading import LoadedModel

Tensor = torch.Tensor


@dataclass(frozen=True)
class TaskData:
    """images: (N, C, *spatial) in [-1, 1] in the checkpoint's channel order; available: (N, C) bool;
    labels: (N,) (-1 unlabelled); truth: (N, 1, *spatial) bool lesion masks from the data, or None."""

    images: Tensor
    available: Tensor
    labels: Tensor
    truth: Tensor | None
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, rows: Tensor) -> "TaskData":
        truth = None if self.truth is None else self.truth[rows]
        return TaskData(self.images[rows], self.available[rows], self.labels[rows], truth, self.source)


def _truth_masks(data: TrainingTensors, channel: str) -> Tensor:
    """Binary masks from a normalised mask channel (background is -1 after normalisation, any label is above)."""
    return (data.images[:, data.schema.index(channel)] > -1.0 + 1e-3).unsqueeze(1)


def load_task_data(source: str, loaded: LoadedModel, config: DataConfig = DataConfig(), *, task: str,
                   need: tuple[str, ...] = (), phantom_n: int = 64, seed: int = 12345,
                   resolution: int = 0) -> TaskData:
    """The site's data at ``source`` (a path, or ``phantom``: fresh draws with a seed the model never saw).

    need: checkpoint channels the task must find in the data (e.g. a translation source); by default at least one
    of the checkpoint's image channels must be present. resolution: 0 for the checkpoint's (super-resolution
    reads its low-resolution inputs at a fraction of it).
    """
    schema = loaded.schema
    resolution = resolution or loaded.resolution
    if loaded.depth and not config.slices:  # volumes at the checkpoint's slices (scaled like a low-resolution input)
        config = replace(config, depth=loaded.depth * resolution // loaded.resolution)
    try:
        data = load_training_set(source, config, resolution, phantom_n=phantom_n, seed=seed).tensors
    except ValueError as error:
        raise ConfigError(f"{task}: cannot prepare {source} at {resolution} px: {error}") from None
    if len(data.spatial) != loaded.spec.spatial_dims:
        raise ConfigError(f"{task}: {source} gives {len(data.spatial)}D examples but the checkpoint is a "
                          f"{loaded.spec.spatial_dims}D model; set [data] slices in site.toml to match")
    own = data.schema.channels
    masks_aside = [c for c in own if data.schema.is_mask(c) and c not in schema.channels]
    unknown = [c for c in own if c not in schema.channels and c not in masks_aside]
    if unknown:
        raise ConfigError(f"{task}: {source} has channels {unknown} that the checkpoint's schema "
                          f"{list(schema.channels)} does not have; map them to the checkpoint's names with [data] "
                          "channels in site.toml, or use a checkpoint trained on them")
    present = [c for c in own if c in schema.channels and not schema.is_mask(c)]
    missing = [c for c in need if c not in own]
    if missing or not present:
        wanted = missing or [schema.channels[i] for i in schema.image_indices]
        raise ConfigError(f"{task}: {source} has channels {list(own)} but the task needs {wanted} of the "
                          f"checkpoint's schema {list(schema.channels)}; give data with those channels or a "
                          "checkpoint trained on the site's channels")
    truth_channel = masks_aside[0] if masks_aside else next((c for c in own if data.schema.is_mask(c)), None)
    truth = None if truth_channel is None else _truth_masks(data, truth_channel)
    n = len(data)
    images = torch.zeros((n, schema.num_channels, *data.spatial), dtype=torch.float32)
    available = torch.zeros((n, schema.num_channels), dtype=torch.bool)
    for i, name in enumerate(own):
        if name in schema.channels:
            images[:, schema.index(name)] = data.images[:, i]
            available[:, schema.index(name)] = data.available[:, i]
    return TaskData(images, available, data.labels, truth, source)


def image_availability(data: TaskData, schema) -> Tensor:
    """(N, C) bool: the image channels (not masks) each example really has: what the tasks process and score."""
    is_image = torch.zeros(schema.num_channels, dtype=torch.bool)
    is_image[list(schema.image_indices)] = True
    return data.available & is_image


def image_channel_weights(data: TaskData, schema) -> Tensor:
    """(N, C, 1, ...) float: 1 on the image channels each example really has, 0 on masks and absent channels."""
    weights = image_availability(data, schema).to(torch.float32)
    return weights.reshape(weights.shape + (1,) * (data.images.dim() - 2))
