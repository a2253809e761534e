"""Stage 1 of a federated latent run at a site: train the shared autoencoder from the coordinator's weights on
every channel the site's examples have (plain, or DP-SGD per patient: privacy/autoencoder_dp.py), or evaluate it:
the held-out reconstruction loss, and the two latent moments the coordinator computes the latent scale from."""

from __future__ import annotations

import time

import torch

from ..common.latent.autoencoder import build_autoencoder
from ..common.latent.training import autoencoder_loss, latent_moments, make_ssim, single_channel_images, train_steps
from ..common.messages import TrainInstruction
from ..common.run_spec import RunSpec
from ..common.training.trainer import default_device
from ..privacy.autoencoder_dp import AutoencoderDPStep, autoencoder_units
from .round import (RoundOutcome, Weights, private_metrics, reserve_round, round_seed, stage_one_run,
                    warn_proximal_unused)
from .site_data import SiteData, align_to_schema

TRAINED = "autoencoder (latent diffusion, stage 1)"  # how the ledger names what a stage-1 round trained


def _pixels(spec: RunSpec, data, site_id: str):
    data = align_to_schema(data, spec.schema)
    if data.spatial[-1] != spec.resolution:
        raise ValueError(f"site {site_id}: data prepared at {data.spatial[-1]} px, the autoencoder trains at "
                         f"{spec.resolution} px; remove [data] resolution from site.toml (the run sets it)")
    return data


def train_autoencoder_round(spec: RunSpec, weights: Weights, site: SiteData, instruction: TrainInstruction,
                            run: str = "", device: str | None = None) -> RoundOutcome:
    """``instruction.local_steps`` steps from the global autoencoder; its learning rate follows the whole
    stage's cosine (global step = earlier rounds' steps + this round's)."""
    data = _pixels(spec, site.train, site.site_id)
    images = single_channel_images(data)
    if not len(images):
        raise ValueError(f"site {site.site_id}: no available channel of the run's {list(spec.schema.channels)}")
    device = torch.device(device) if device else default_device()
    recipe, seed = spec.autoencoder_recipe, round_seed(spec.autoencoder_recipe.seed, instruction.server_round,
                                                       site.site_id)
    network = build_autoencoder(spec.autoencoder)
    network.load_state_dict(weights, strict=True)
    first = (instruction.server_round - 1) * instruction.local_steps  # global steps, for the stage's cosine
    total = instruction.rounds * instruction.local_steps
    if site.privacy.enabled:
        warn_proximal_unused(instruction, site.site_id)
        return _private(spec, network, data, site, instruction, run, seed, device, first, total)
    network.to(device)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the posterior draws
        losses = train_steps(network, images, recipe, instruction.local_steps, first_step=first, total_steps=total,
                             generator=torch.Generator().manual_seed(seed), device=device,
                             proximal_mu=instruction.proximal_mu)
    seconds = time.perf_counter() - start
    metrics = {"num-examples": len(data), "train-loss": sum(losses) / len(losses), "steps": len(losses),
               "seconds": seconds, "images-per-second": len(losses) * recipe.batch_size / max(seconds, 1e-9),
               "skipped-nonfinite": 0, "trained-parameters": sum(p.numel() for p in network.parameters())}
    return RoundOutcome({k: v.detach().cpu() for k, v in network.state_dict().items()}, metrics)


def _private(spec, network, data, site, instruction, run, seed, device, first, total) -> RoundOutcome:
    """DP-SGD on the autoencoder; the ledger counts it under ``<run>/autoencoder``, at autoencoder_share of the
    site's target epsilon."""
    recipe, privacy = spec.autoencoder_recipe, site.privacy
    units = autoencoder_units(data, privacy, recipe.batch_size)
    ledger, reservation, noise, delta = reserve_round(site, units, instruction, stage_one_run(run),
                                                      privacy.target_epsilon * privacy.autoencoder_share, TRAINED)
    try:
        step = AutoencoderDPStep(network, recipe, privacy, data, noise, list(reservation.history_before), seed,
                                 device)
        result = step.train(instruction.local_steps, first, total)
    except BaseException as error:
        ledger.cancel(reservation, f"training failed before release: {error!r}")
        raise
    metrics = private_metrics(site, instruction, result, reservation, units, noise, delta, len(data))
    return RoundOutcome(step.weights(), {**metrics, "trained-parameters": sum(p.numel() for p in network.parameters())},
                        lambda: ledger.released(reservation))


@torch.no_grad()
def evaluate_autoencoder(spec: RunSpec, weights: Weights, site: SiteData, seed: int = 0,
                         device: str | None = None) -> dict:
    """The held-out reconstruction loss (the training loss at the posterior draw of ``seed``) and the moments of
    the held-out latents (unscaled), which the coordinator turns into the latent scale."""
    data = site.holdout if site.holdout is not None and len(site.holdout) else site.train
    data = _pixels(spec, data, site.site_id)
    device = torch.device(device) if device else default_device()
    file = spec.autoencoder_file(weights, 1.0, {})
    network = file.network().to(device)
    images = single_channel_images(data)
    ssim = make_ssim(images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        losses = [float(autoencoder_loss(network, images[i:i + 64].to(device), ssim, spec.autoencoder_recipe))
                  * len(images[i:i + 64]) for i in range(0, len(images), 64)]
    values, mean, mean_square = latent_moments(file, data, device)
    return {"num-examples": len(data), "held-out": int(site.holdout is not None),
            "eval-loss": sum(losses) / len(images),
            "latent-values": values, "latent-mean": mean, "latent-meansq": mean_square}
