"""DP-SGD for stage 1 of latent diffusion: Opacus on the shared autoencoder, per patient or per example.

The autoencoder trains on single-channel images (common/latent/training.py), several per example (one per channel
the example has) and more per patient. So the unit is never one image: Opacus samples units (patients, or
examples where the data names none: privacy/units.py) by Poisson sampling, each sampled unit's images are
gathered (up to ``slices_per_patient`` examples of a patient, every available channel of each), their per-image
gradients (Opacus hooks) are averaged per unit, and Opacus clips each unit's mean to ``max_grad_norm`` and adds
Gaussian noise to the sum, as for the denoiser (dp_sgd.py). The accountant is seeded with the site's earlier
releases, so the epsilon it reports is the site's total over both stages and every run.

Protected and not protected: as for the denoiser (dp_sgd.py); the scale of the latents is computed from two
scalars per site (their mean and mean square) that the evaluation sends without DP noise, as the held-out loss is.
"""

from __future__ import annotations

import math
import time

import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from ..common.config import PrivacyConfig
from ..common.data.tensors import TrainingTensors
from ..common.latent.training import AutoencoderRecipe, autoencoder_loss, cosine_rate, make_ssim
from .accounting import Release
from .dp_sgd import PrivateRoundResult
from .units import PATIENT, PrivacyUnits, gather_patients, per_patient, privacy_units


def autoencoder_units(data: TrainingTensors, privacy: PrivacyConfig, batch_size: int) -> PrivacyUnits:
    """The privacy units of the autoencoder's DP-SGD. ``batch_size`` counts single-channel images, as in plain
    training, so the units per step are chosen to give about that many images: an example brings one image per
    channel it has."""
    per_example = float(data.available.sum(1).float().mean()) if len(data) else 1.0
    return privacy_units(data, privacy, max(1, round(batch_size / max(per_example, 1.0))))


class AutoencoderDPStep:
    """DP-SGD steps on ``network`` (an AutoencoderKL) over ``data``'s units; ``history``: the site's releases."""

    def __init__(self, network: torch.nn.Module, recipe: AutoencoderRecipe, privacy: PrivacyConfig,
                 data: TrainingTensors, noise_multiplier: float, history: list[Release], seed: int,
                 device: torch.device) -> None:
        if privacy.grad_sample_mode != "hooks":
            raise ValueError("[privacy] grad_sample_mode: the autoencoder's DP-SGD gathers each unit's images, "
                             "which only \"hooks\" supports; set grad_sample_mode = \"hooks\"")
        self.network, self.recipe, self.privacy, self.device = network.to(device), recipe, privacy, device
        self.data, self.seed = data, seed
        self.units = autoencoder_units(data, privacy, recipe.batch_size)
        self.delta = privacy.delta_for(self.units.count)
        self.generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(TensorDataset(torch.arange(self.units.count)), batch_size=self.units.per_step)
        self.engine = PrivacyEngine(accountant=privacy.accountant)
        self.engine.accountant.history = list(history)
        optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.learning_rate)
        self.private_model, self.optimizer, self.loader = self.engine.make_private(
            module=network, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
            max_grad_norm=privacy.max_grad_norm, poisson_sampling=True, grad_sample_mode="hooks")
        self.sample_rate = float(self.loader.sample_rate)
        if not math.isclose(self.sample_rate, self.units.sample_rate):  # the noise was calibrated for the units' rate
            raise RuntimeError(f"Opacus samples at {self.sample_rate}, the noise was set for {self.units.sample_rate}")

    def _images(self, sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (P, 1, *spatial), owner of each image 0 .. len(sampled)-1) of the sampled units."""
        if self.units.kind == PATIENT:
            rows, owners = gather_patients(self.units, sampled, self.generator)
        else:
            rows, owners = sampled, torch.arange(len(sampled))
        available = self.data.available[rows]
        pairs = available.nonzero()
        return self.data.images[rows[pairs[:, 0]], pairs[:, 1]].unsqueeze(1), owners[pairs[:, 0]]

    def _gradients(self, images: torch.Tensor, owners: torch.Tensor, units: int, ssim) -> float:
        """Leaves each parameter's per-unit gradient (units, *shape) for Opacus to clip; returns the mean loss."""
        self.optimizer.zero_grad(set_to_none=True)
        parameters = [p for p in self.network.parameters() if p.requires_grad]
        if len(images) == 0:  # an empty Poisson batch: nothing to clip, the optimizer still adds noise
            for p in parameters:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            return float("nan")
        loss = autoencoder_loss(self.private_model, images.to(self.device), ssim, self.recipe)
        loss.backward()
        for p in parameters:
            p.grad_sample = per_patient(self.optimizer._get_flat_grad_sample(p), owners, units)
        return float(loss.detach())

    def train(self, steps: int, first_step: int, total_steps: int) -> PrivateRoundResult:
        """``steps`` noisy steps (global steps ``first_step`` ... of ``total_steps`` for the learning rate)."""
        self.private_model.train()
        ssim = make_ssim(self.data.images[:1, :1])
        losses, seen, done = [], 0, 0
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)  # Poisson sampling, the posterior draws and the DP noise
            while done < steps:
                for (sampled,) in self.loader:
                    for group in self.optimizer.param_groups:
                        group["lr"] = cosine_rate(self.recipe, first_step + done, total_steps)
                    images, owners = self._images(sampled)
                    loss = self._gradients(images, owners, len(sampled), ssim)
                    self.optimizer.step()
                    if loss == loss:
                        losses.append(loss)
                    seen += len(images)
                    done += 1
                    if done == steps:
                        break
        seconds = time.perf_counter() - start
        epsilon = float(self.engine.accountant.get_epsilon(self.delta))
        return PrivateRoundResult(done, seen, sum(losses) / max(1, len(losses)), seconds, epsilon, self.delta,
                                  self.units)

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
