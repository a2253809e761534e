"""Model-ready examples stacked into tensors: what the trainer and the tasks consume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..schema import ChannelSchema, Example


@dataclass(frozen=True)
class TrainingTensors:
    """images: (N, C, *spatial) float32 in [-1, 1]; available: (N, C) bool; labels: (N,) long, -1 = unlabelled.

    patients: (N,) long, the patient each example belongs to (0 .. P-1), when the data names its patients (DICOM
    PatientID, an npz ``patient`` array, one NIfTI volume per patient); None when it does not. Patient-level DP
    and patient-wise held-out splits read it."""

    schema: ChannelSchema
    images: torch.Tensor
    available: torch.Tensor
    labels: torch.Tensor
    patients: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    @property
    def depth(self) -> int:
        """The slices of anisotropic volumes (recorded in checkpoints); 0 for images and cubes."""
        spatial = self.spatial
        return spatial[0] if len(spatial) == 3 and spatial[0] != spatial[-1] else 0

    def to(self, device: str | torch.device) -> "TrainingTensors":
        return TrainingTensors(self.schema, self.images.to(device), self.available.to(device), self.labels.to(device),
                               self.patients)

    def subset(self, indices: torch.Tensor) -> "TrainingTensors":
        """The examples at ``indices`` (patient numbers kept as they are: they only need to tell patients apart)."""
        patients = None if self.patients is None else self.patients[indices.to(self.patients.device)]
        return TrainingTensors(self.schema, self.images[indices], self.available[indices], self.labels[indices],
                               patients)


def patient_numbers(names: list[str]) -> torch.Tensor:
    """Each example's patient as a number 0 .. P-1 (in order of the sorted patient ids)."""
    index = {name: i for i, name in enumerate(sorted(set(names)))}
    return torch.tensor([index[name] for name in names], dtype=torch.long)


def stack_examples(examples: list[Example], schema: ChannelSchema, patient_ids: bool = False) -> TrainingTensors:
    """Stack prepared examples (all of the same shape, see ``transforms.prepare``); ``patient_ids``: the loader
    found real patient ids, so the tensors keep them."""
    if not examples:
        raise ValueError("no examples to stack: the data set is empty after loading")
    shapes = {e.image.shape for e in examples}
    if len(shapes) != 1:
        raise ValueError(f"examples have different shapes {sorted(shapes)}; resize them first (transforms.prepare)")
    images = torch.from_numpy(np.stack([e.image for e in examples]).astype(np.float32))
    available = torch.from_numpy(np.stack([e.available for e in examples]).astype(bool))
    labels = torch.tensor([-1 if e.label is None else int(e.label) for e in examples], dtype=torch.long)
    patients = patient_numbers([e.patient for e in examples]) if patient_ids else None
    return TrainingTensors(schema, images, available, labels, patients)
