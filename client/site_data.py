"""A site's data as the federation needs it: aligned to the run's channel schema, split into train and held-out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common.config import PrivacyConfig
from ..common.data.tensors import TrainingTensors
from ..common.schema import ChannelSchema
from ..common.specs import RuntimeSpec


HOLDOUT_FRACTION = 0.1  # kept out of training at every site (evaluation, and the memorisation audit's calibration)


@dataclass(frozen=True)
class SiteData:
    site_id: str
    train: TrainingTensors
    holdout: TrainingTensors | None = None
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # the site's own choice, not the server's
    ledger_path: Path | None = None  # where the site's privacy ledger lives (required when privacy is enabled)
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)  # the site's own hardware switches
    tracking_uri: str = ""  # the site's own MLflow store ("" = no tracking at the site)


def align_to_schema(data: TrainingTensors, schema: ChannelSchema) -> TrainingTensors:
    """Reorder the site's channels to the run's by name; channels the site lacks become unavailable.

    Raises ValueError naming channels the run does not know (the site would train on something nobody asked for).
    """
    extra = sorted(set(data.schema.channels) - set(schema.channels))
    if extra:
        raise ValueError(f"site channels {extra} are not in the run's schema {list(schema.channels)}; "
                         "map them with [data] channels in site.toml")
    if data.schema.channels == schema.channels:
        return TrainingTensors(schema, data.images, data.available, data.labels, data.patients)
    n = len(data)
    images = torch.zeros((n, schema.num_channels, *data.spatial), dtype=data.images.dtype)
    available = torch.zeros((n, schema.num_channels), dtype=torch.bool)
    for i, name in enumerate(data.schema.channels):
        images[:, schema.index(name)] = data.images[:, i]
        available[:, schema.index(name)] = data.available[:, i]
    return TrainingTensors(schema, images, available, data.labels, data.patients)


def holdout_split(data: TrainingTensors, fraction: float, seed: int = 0) -> tuple[TrainingTensors, TrainingTensors | None]:
    """(train, held-out): a random ``fraction`` (at least one example when fraction > 0) kept out of training.

    Where the data names enough patients (at least 1 / fraction, so one patient is about a fraction of the data),
    whole patients are held out: a patient's other slices in training would make the held-out loss, and the
    memorisation audit calibrated on it, look better than they are. With fewer patients the split stays
    slice-wise (holding out one of two patients would take half the data from training)."""
    patients = data.patients
    count = 0 if patients is None else len(torch.unique(patients))
    if patients is None or count == len(data) or fraction <= 0 or count < math.ceil(1 / fraction):
        if fraction <= 0 or len(data) < 2:
            return data, None
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        k = max(1, int(round(fraction * len(data))))
        return data.subset(order[k:]), data.subset(order[:k])
    names = torch.unique(patients)
    order = names[torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))]
    held = torch.isin(patients, order[:max(1, int(round(fraction * len(names))))])
    return data.subset(torch.nonzero(~held).flatten()), data.subset(torch.nonzero(held).flatten())
