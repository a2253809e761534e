"""From a site's data (a path, or the built-in phantom) to training tensors at one resolution."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import DataConfig
from ..plan import PHANTOM_RESOLUTION
from .fingerprint import compute_fingerprint
from .loader import load_dataset
from .phantom import phantom_dataset
from .problems import LoadedData
from .tensors import TrainingTensors, stack_examples
from .transforms import prepare

log = logging.getLogger(__name__)

PHANTOM = "phantom"


@dataclass(frozen=True)
class TrainingSet:
    tensors: TrainingTensors
    resolution: int
    source: str
    studies: int
    patient_ids: str = ""  # where the patient ids come from; "" when the data names no patients


def load_raw(source: str, config: DataConfig, *, phantom_n: int = 256, site: int = 0, seed: int = 0) -> LoadedData:
    """The site's loaded data: ``phantom`` means the built-in digital phantom of virtual site ``site``."""
    if source == PHANTOM:
        return phantom_dataset(phantom_n, size=64, site=site, seed=seed)
    return load_dataset(source, config)


def load_training_set(source: str, config: DataConfig = DataConfig(), resolution: int = 0, *,
                      phantom_n: int = 256, site: int = 0, seed: int = 0, latent: bool = False) -> TrainingSet:
    """Load, normalise, slice and resize. resolution 0: the config's, else the phantom's or the suggested one
    (``latent``: the size a latent model is suggested at, for an autoencoder)."""
    data = load_raw(source, config, phantom_n=phantom_n, site=site, seed=seed)
    if not resolution and not config.resolution and source != PHANTOM:
        fingerprint = compute_fingerprint(data)
        resolution = fingerprint.latent_resolution if latent else fingerprint.suggested_resolution
    if not resolution:
        resolution = config.resolution or PHANTOM_RESOLUTION
    ready = prepare(data.examples, data.schema, resolution, slices=config.slices,
                    lower=config.lower_percentile, upper=config.upper_percentile, depth=config.depth)
    log.info("training set %s: %d studies -> %d examples at %d px%s", source, len(data.examples), len(ready),
             resolution, f", {config.depth} slices" if config.depth and not config.slices else "")
    return TrainingSet(stack_examples(ready, data.schema, bool(data.patient_ids)), resolution,
                       source if source == PHANTOM else str(data.root), len(data.examples), data.patient_ids)
