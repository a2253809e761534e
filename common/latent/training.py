"""Training the autoencoder on a site's data: L1 + SSIM reconstruction and a small KL term, no learned
perceptual loss (nothing is downloaded at run time), on single-channel images drawn from the channels each example
really has; then the scale that gives the latents the pixel data's spread (sigma_data), and the reconstruction
quality per channel on held-out examples."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from monai.losses import SSIMLoss
from monai.metrics import SSIMMetric

from ..data.tensors import TrainingTensors
from ..progress import step_progress
from ..specs import ModelSpec
from .autoencoder import AutoencoderFile, AutoencoderSpec, build_autoencoder
from .codec import LatentCodec

SIGMA_DATA = ModelSpec.sigma_data  # the pixel data's spread the denoiser is preconditioned for (one source)


@dataclass(frozen=True)
class AutoencoderRecipe:
    steps: int = 600
    batch_size: int = 16
    learning_rate: float = 5e-4
    ssim_weight: float = 0.5
    kl_weight: float = 1e-6
    seed: int = 0


def single_channel_images(data: TrainingTensors) -> torch.Tensor:
    """(N', 1, *spatial): every (example, channel) pair the site really has."""
    pairs = data.available.nonzero()
    return data.images[pairs[:, 0], pairs[:, 1]].unsqueeze(1)


def kl_divergence(mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, sigma^2) || N(0, 1)) summed over the latent, averaged over the batch."""
    terms = mean.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2).clamp_min(1e-12)) - 1
    return 0.5 * terms.flatten(1).sum(1).mean()


def _window(size: int) -> int:
    return min(11, size - 1 if size % 2 == 0 else size)  # an odd SSIM window no larger than the image


def make_ssim(images: torch.Tensor) -> SSIMLoss:
    """The SSIM loss for batches of ``images`` (N, 1, *spatial)."""
    return SSIMLoss(images.dim() - 2, data_range=2.0, win_size=_window(min(images.shape[2:])))


def autoencoder_loss(network: torch.nn.Module, batch: torch.Tensor, ssim: SSIMLoss,
                     recipe: AutoencoderRecipe) -> torch.Tensor:
    """L1 + SSIM reconstruction + KL, each a mean over the batch's images (so Opacus' hooks, which assume a mean
    of per-image losses, give each image's own gradient)."""
    reconstruction, mean, sigma = network(batch)
    return (reconstruction - batch).abs().mean() + recipe.ssim_weight * ssim(reconstruction, batch) \
        + recipe.kl_weight * kl_divergence(mean, sigma)


def cosine_rate(recipe: AutoencoderRecipe, step: int, total: int) -> float:
    """Cosine decay over the whole training (all rounds of a federated run): the last steps settle the details."""
    return recipe.learning_rate * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def train_steps(network: torch.nn.Module, images: torch.Tensor, recipe: AutoencoderRecipe, steps: int, *,
                first_step: int, total_steps: int, generator: torch.Generator, device: torch.device,
                progress: bool = False, proximal_mu: float = 0.0) -> list[float]:
    """``steps`` AdamW steps on random batches of ``images`` (N, 1, *spatial), the learning rate at global step
    ``first_step + k`` of ``total_steps``; returns the losses (without FedProx's term). proximal_mu > 0 adds
    FedProx's mu / 2 ||w - w_start||^2 around the weights the call starts from (the global autoencoder)."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.learning_rate)
    anchor = [p.detach().clone() for p in network.parameters()] if proximal_mu > 0 else []
    ssim = make_ssim(images)
    network.train()
    losses = []
    with step_progress(steps, enabled=progress, description="autoencoder steps") as advance:
        for k in range(steps):
            batch = images[torch.randint(len(images), (recipe.batch_size,), generator=generator)].to(device)
            for group in optimizer.param_groups:
                group["lr"] = cosine_rate(recipe, first_step + k, total_steps)
            loss = autoencoder_loss(network, batch, ssim, recipe)
            if not torch.isfinite(loss):
                raise ValueError(f"the autoencoder's loss is not finite at step {first_step + k}; lower the "
                                 "learning rate")
            objective = loss
            if anchor:
                distance = sum(((p - a) ** 2).sum() for p, a in zip(network.parameters(), anchor))
                objective = loss + 0.5 * proximal_mu * distance
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            advance()
    return losses


@torch.no_grad()
def latent_moments(file: AutoencoderFile, data: TrainingTensors, device: torch.device) -> tuple[int, float, float]:
    """(values, mean, mean square) of the unscaled latents of ``data``'s available channels: what the scale is
    computed from, at one site or summed over sites."""
    codec = LatentCodec(replace(file, scale=1.0), device)
    values = codec.encode(data.images, data.available)[codec.latent_available(data.available)].double()
    return values.numel(), float(values.mean()), float(values.pow(2).mean())


def scale_for(values: int, mean: float, mean_square: float) -> float:
    """The scale that gives latents of these moments the spread the denoiser expects (sigma_data)."""
    spread = math.sqrt(max(mean_square - mean * mean, 0.0)) if values else 0.0
    return SIGMA_DATA / max(spread, 1e-6)


def train_autoencoder(data: TrainingTensors, spec: AutoencoderSpec, recipe: AutoencoderRecipe, *,
                      device: torch.device, progress: bool = False) -> tuple[AutoencoderFile, dict]:
    """The trained stage-1 file (scale set from ``data``) and a summary: steps, seconds, last losses."""
    images = single_channel_images(data)
    if not len(images):
        raise ValueError("no available channel to train the autoencoder on")
    generator = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        network = build_autoencoder(spec).to(device)
    start = time.perf_counter()
    losses = train_steps(network, images, recipe, recipe.steps, first_step=0, total_steps=recipe.steps,
                         generator=generator, device=device, progress=progress)
    seconds = time.perf_counter() - start
    weights = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    unscaled = AutoencoderFile(spec, data.schema, data.spatial[-1], 1.0, weights, depth=data.depth)
    moments = latent_moments(unscaled, data, device)
    scale = scale_for(*moments)
    tail = losses[-min(50, len(losses)):]
    summary = {"steps": recipe.steps, "seconds": seconds, "images_per_second": recipe.steps * recipe.batch_size
               / max(seconds, 1e-9), "loss_first": losses[0], "loss_last": sum(tail) / len(tail),
               "latent_std_unscaled": SIGMA_DATA / scale, "scale": scale, "training_images": len(images)}
    return replace(unscaled, scale=scale), summary


def reconstruction_quality(codec: LatentCodec, data: TrainingTensors) -> dict[str, dict[str, float]]:
    """PSNR (dB, data range [-1, 1]) and SSIM of encode-decode per channel over the examples that have it."""
    return channel_quality(codec.decode(codec.encode(data.images)).cpu(), data)


def channel_quality(rebuilt: torch.Tensor, data: TrainingTensors) -> dict[str, dict[str, float]]:
    """PSNR (dB, data range [-1, 1]) and SSIM of ``rebuilt`` against ``data`` per channel, over the examples
    that have the channel (an autoencoder's reconstruction, or a baseline's, scored alike)."""
    ssim = SSIMMetric(data.images.dim() - 2, data_range=2.0, win_size=_window(min(data.spatial)))
    quality = {}
    for c, name in enumerate(data.schema.channels):
        have = data.available[:, c]
        if not have.any():
            continue
        truth, guess = data.images[have, c:c + 1], rebuilt[have, c:c + 1]
        mse = float(((truth - guess) ** 2).mean())
        quality[name] = {"psnr_db": 10 * math.log10(4.0 / max(mse, 1e-12)), "ssim": float(ssim(guess, truth).mean()),
                         "examples": int(have.sum())}
    return quality
