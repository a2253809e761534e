"""One federated round at a site, without Flower: load the global weights, train, evaluate. The ClientApp is a
thin wrapper around these two functions, so they are tested directly."""

from __future__ import annotations

import logging
import zlib
from dataclasses import replace

import torch

from ..common.diffusion.loss import LossConfig, per_example_loss
from ..common.diffusion.model import ConditionalDenoiser
from ..common.diffusion.schedules import make_schedule
from ..common.run_spec import RunSpec
from .site_data import SiteData, align_to_schema
from .trainer import LocalTrainer, default_device

log = logging.getLogger(__name__)

BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def round_seed(seed: int, server_round: int, site_id: str) -> int:
    """A different, reproducible seed for each site and round (Python's hash() is salted per process)."""
    return zlib.crc32(f"{seed}/{server_round}/{site_id}".encode())


def train_round(spec: RunSpec, weights: dict[str, torch.Tensor], site: SiteData, steps: int, server_round: int,
                proximal_mu: float = 0.0, device: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Train ``steps`` local steps from the global ``weights``; returns new weights and scalar metrics."""
    data = align_to_schema(site.train, spec.schema)
    if data.spatial[-1] != spec.resolution:
        raise ValueError(f"site {site.site_id}: data prepared at {data.spatial[-1]} px, the run trains at "
                         f"{spec.resolution} px; set [data] resolution = {spec.resolution} in site.toml")
    config = replace(spec.train, seed=round_seed(spec.train.seed, server_round, site.site_id),
                     proximal_mu=proximal_mu, steps=steps)
    trainer = LocalTrainer(spec.schema, spec.model, config, device)
    trainer.load_weights(weights)
    result = trainer.train(data, steps)
    metrics = {"num-examples": len(data), "train-loss": result.loss, "steps": result.steps,
               "seconds": result.seconds, "images-per-second": result.images_per_second,
               "skipped-nonfinite": result.skipped_nonfinite}
    return trainer.weights(), metrics


@torch.no_grad()
def evaluate_round(spec: RunSpec, weights: dict[str, torch.Tensor], site: SiteData, seed: int = 0,
                   device: str | None = None) -> dict:
    """Held-out denoising loss overall and per noise band (t in quarters of [0, 1]), all channels diffused."""
    data = site.holdout if site.holdout is not None and len(site.holdout) else site.train
    data = align_to_schema(data, spec.schema)
    device = torch.device(device) if device else default_device()
    model = ConditionalDenoiser(spec.schema, spec.model)  # no optimizer or EMA: evaluation only reads weights
    model.load_state_dict(weights, strict=True)
    model.to(device).eval()
    schedule = make_schedule(spec.train.schedule)
    generator = torch.Generator().manual_seed(seed)
    metrics = {"num-examples": len(data), "held-out": int(site.holdout is not None)}
    band_losses = []
    for index, (low, high) in enumerate(BANDS, start=1):
        t = low + (high - low) * torch.rand(len(data), generator=generator, dtype=torch.float64)
        t = t.clamp(min=getattr(schedule, "t_min", 1e-3))
        losses = per_example_loss(model, schedule, data.images.to(device), data.available.to(device),
                                  data.labels.to(device),
                                  LossConfig(p_condition=0.0, p_uncond=0.0, noise=spec.train.noise), generator, t)
        band_losses.append(float(losses.mean()))
        metrics[f"eval-loss-band{index}"] = band_losses[-1]
    metrics["eval-loss"] = sum(band_losses) / len(band_losses)
    return metrics
