"""Who DP-SGD protects at a site: each patient as a whole, or each example (slice/image).

A hospital's privacy officer asks about patients. A PGBM patient gives about 24 slices; with the example as the
unit, that patient is protected only by group privacy over 24 examples, far more weakly than the printed
epsilon. With the patient as the unit, patients are Poisson-sampled (each with probability q = expected patients
per step / patients at the site), every sampled patient's slices in the step form one contribution (the mean of
their per-example gradients) clipped to C as a whole, and the accountant counts patients. A patient's
contribution may be computed from any subset of their slices, so up to ``slices_per_patient`` slices are drawn
per step: the analysis only needs each patient's whole contribution bounded by C.

Data that names no patients (``TrainingTensors.patients`` is None) falls back to the example as the unit, and
the unit's name says so. Data with one example per patient gives the same sampling rate, clipping and epsilon in
both units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..common.config import PrivacyConfig
from ..common.data.tensors import TrainingTensors

PATIENT, EXAMPLE = "patient", "example"


@dataclass(frozen=True)
class PrivacyUnits:
    """kind: "patient" or "example"; owners: (N,) the unit (0 .. count-1) of each training example; per_step: the
    expected units per step (Opacus's batch size over units); sample_rate: each unit's Poisson probability."""

    kind: str
    owners: torch.Tensor
    count: int
    per_step: int
    slices_per_patient: int
    reason: str  # why this unit, in one phrase for logs and reports
    members: tuple[torch.Tensor, ...] = ()  # each patient's example rows (patient unit), found once

    @property
    def sample_rate(self) -> float:
        """Opacus's rate for a loader of ``count`` units in batches of ``per_step`` (1 / number of batches)."""
        return 1.0 / math.ceil(self.count / self.per_step)

    @property
    def grouped(self) -> bool:
        """Some unit holds several examples (the patient path must gather and clip them together)."""
        return self.kind == PATIENT and self.count < len(self.owners)

    def describe(self) -> str:
        if self.kind == PATIENT:
            return f"patient-level ({self.count} patients, {len(self.owners)} examples)"
        return f"example-level ({self.count} examples; {self.reason})"


def privacy_units(data: TrainingTensors, privacy: PrivacyConfig, batch_size: int) -> PrivacyUnits:
    """The unit the site's settings and data give. Patients per step keep the expected examples per step near
    ``batch_size``: batch_size / min(slices_per_patient, mean slices per patient), at least 1."""
    n = len(data)
    if privacy.unit == EXAMPLE or data.patients is None:
        reason = "as [privacy] unit asks" if privacy.unit == EXAMPLE else "the data names no patients"
        return PrivacyUnits(EXAMPLE, torch.arange(n), n, batch_size, 1, reason)
    _, owners = torch.unique(data.patients.cpu(), return_inverse=True)
    count = int(owners.max()) + 1 if n else 0
    slices = min(float(privacy.slices_per_patient), n / max(1, count))
    per_step = max(1, min(count, round(batch_size / slices)))
    order = torch.argsort(owners, stable=True)
    members = tuple(torch.split(order, torch.bincount(owners, minlength=count).tolist()))
    return PrivacyUnits(PATIENT, owners, count, per_step, privacy.slices_per_patient, "patient ids in the data",
                        members)


def gather_patients(units: PrivacyUnits, patients: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor,
                                                                                                      torch.Tensor]:
    """(example rows, owner of each row as 0 .. len(patients)-1) for the sampled ``patients``: up to
    ``slices_per_patient`` of each patient's examples, drawn at random."""
    rows, owners = [], []
    for position, patient in enumerate(patients.tolist()):
        members = units.members[patient]
        if len(members) > units.slices_per_patient:
            members = members[torch.randperm(len(members), generator=generator)[:units.slices_per_patient]]
        rows.append(members)
        owners.append(torch.full((len(members),), position, dtype=torch.long))
    if not rows:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(rows), torch.cat(owners)


def per_patient(grad_sample: torch.Tensor, owners: torch.Tensor, patients: int) -> torch.Tensor:
    """(patients, *shape): the mean of each patient's per-example gradients (rows of ``grad_sample``)."""
    summed = torch.zeros((patients, *grad_sample.shape[1:]), dtype=grad_sample.dtype, device=grad_sample.device)
    summed.index_add_(0, owners.to(grad_sample.device), grad_sample)
    counts = torch.bincount(owners, minlength=patients).clamp(min=1).to(grad_sample.device, grad_sample.dtype)
    return summed / counts.view(-1, *([1] * (grad_sample.dim() - 1)))
