"""A latent run's site data: the site's images, prepared at the autoencoder's size and aligned to the run's pixel
channels, encoded by the run's autoencoder (common/latent/codec.py), so the round trains the one denoiser on them.

The latents are derived patient data: they stay in this process's memory and never leave the site. A simulation's
virtual site and a site worker serve many rounds from one process, so they are encoded once per data set and
autoencoder (the autoencoder is frozen in stage 2); a ClientApp without a site worker encodes in every round.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..common.data.tensors import TrainingTensors
from ..common.latent.codec import LatentCodec
from ..common.run_spec import RunSpec
from ..common.training.trainer import default_device
from .site_data import SiteData, align_to_schema

CACHED = 4  # encoded data sets kept per process (one per virtual site of a simulation, typically)
Encoded = tuple[TrainingTensors, TrainingTensors | None, TrainingTensors, TrainingTensors | None]  # pixels -> latents
_encoded: dict[tuple[str, str], Encoded] = {}  # by (site, autoencoder SHA-256)


def latent_site(site: SiteData, spec: RunSpec, device: str | None = None) -> SiteData:
    """``site`` with its train and held-out data encoded for ``spec``'s latent run (itself for a pixel run)."""
    if spec.latent is None:
        return site
    key = (site.site_id, spec.latent.sha256)
    cached = _encoded.get(key)
    if cached is not None and cached[0] is site.train and cached[1] is site.holdout:
        return replace(site, train=cached[2], holdout=cached[3])
    codec = LatentCodec(spec.latent, torch.device(device) if device else default_device())
    train = _encode(codec, site.train, spec, site.site_id)
    holdout = _encode(codec, site.holdout, spec, site.site_id) if site.holdout is not None else None
    if len(_encoded) >= CACHED:
        _encoded.pop(next(iter(_encoded)))
    _encoded[key] = (site.train, site.holdout, train, holdout)
    return replace(site, train=train, holdout=holdout)


def _encode(codec: LatentCodec, data: TrainingTensors, spec: RunSpec, site_id: str) -> TrainingTensors:
    if data.spatial[-1] != spec.data_resolution:
        raise ValueError(f"site {site_id}: data prepared at {data.spatial[-1]} px, the run's autoencoder encodes "
                         f"{spec.data_resolution} px images; remove [data] resolution from site.toml (the run sets it)")
    return codec.encode_tensors(align_to_schema(data, spec.data_schema))
