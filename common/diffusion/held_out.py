"""The held-out denoising loss: how well a model denoises examples it never trained on, overall and per noise band.

One number serves two readers: a site's evaluation in a federated round (client/round.py), and early stopping
(common/training/early_stopping.py). The noise levels and draws come from a generator seeded by the caller, so two
evaluations with the same seed differ only by the model: a paired comparison, not two noisy estimates.
"""

from __future__ import annotations

import torch

from ..data.tensors import TrainingTensors
from .denoiser import Denoiser
from .loss import LossConfig

BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))  # t in quarters of [0, 1]
CHUNK = 256  # examples per forward pass (bounded memory on a site's GPU or CPU)


@torch.no_grad()
def held_out_loss(denoiser: Denoiser, data: TrainingTensors, noise: str = "gaussian", seed: int = 0,
                  device: torch.device | str = "cpu") -> dict[str, float]:
    """{"eval-loss": mean over the bands, "eval-loss-band1".. "-band4"}: every channel diffused, no condition
    given and no class dropped, so the loss measures the model alone. The network is put in eval mode and left so."""
    denoiser.model.eval()
    generator = torch.Generator().manual_seed(seed)
    config = LossConfig(p_condition=0.0, p_uncond=0.0, noise=noise)
    metrics, band_losses = {}, []
    for index, (low, high) in enumerate(BANDS, start=1):
        t = (low + (high - low) * torch.rand(len(data), generator=generator, dtype=torch.float64))
        t = t.clamp(min=denoiser.schedule.t_min)
        total = 0.0
        for start in range(0, len(data), CHUNK):
            rows = slice(start, start + CHUNK)
            losses = denoiser.loss(data.images[rows].to(device), data.available[rows].to(device),
                                   data.labels[rows].to(device), config, generator, t[rows])
            total += float(losses.double().sum())
        band_losses.append(total / max(1, len(data)))
        metrics[f"eval-loss-band{index}"] = band_losses[-1]
    metrics["eval-loss"] = sum(band_losses) / len(band_losses)
    return metrics
