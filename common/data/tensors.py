"""Model-ready examples stacked into tensors: what the trainer and the tasks consume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..schema import ChannelSchema, Example


@dataclass(frozen=True)
class TrainingTensors:
    """images: (N, C, *spatial) float32 in [-1, 1]; available: (N, C) bool; labels: (N,) long, -1 = unlabelled."""

    schema: ChannelSchema
    images: torch.Tensor
    available: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    def to(self, device: str | torch.device) -> "TrainingTensors":
        return TrainingTensors(self.schema, self.images.to(device), self.available.to(device), self.labels.to(device))

    def subset(self, indices: torch.Tensor) -> "TrainingTensors":
        return TrainingTensors(self.schema, self.images[indices], self.available[indices], self.labels[indices])


def stack_examples(examples: list[Example], schema: ChannelSchema) -> TrainingTensors:
    """Stack prepared examples (all of the same shape, see ``transforms.prepare``)."""
    if not examples:
        raise ValueError("no examples to stack: the data set is empty after loading")
    shapes = {e.image.shape for e in examples}
    if len(shapes) != 1:
        raise ValueError(f"examples have different shapes {sorted(shapes)}; resize them first (transforms.prepare)")
    images = torch.from_numpy(np.stack([e.image for e in examples]).astype(np.float32))
    available = torch.from_numpy(np.stack([e.available for e in examples]).astype(bool))
    labels = torch.tensor([-1 if e.label is None else int(e.label) for e in examples], dtype=torch.long)
    return TrainingTensors(schema, images, available, labels)
