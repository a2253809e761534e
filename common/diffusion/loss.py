"""The training objective: denoise the channels a site really has, given a random subset of the others.

Per example, each available channel is given clean as a condition with probability ``p_condition`` (at least
one available channel is always left to diffuse); the loss covers only diffused channels that the example
really has, so a site without t2 never pushes the t2 output anywhere. Class labels are dropped to the null class
with probability ``p_uncond`` so classifier-free guidance works at sampling time. The denoiser
(denoiser.py ``Denoiser.loss``) puts these pieces together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossConfig:
    p_condition: float = 0.3
    p_uncond: float = 0.1
    noise: str = "gaussian"  # or "simplex" (AnoDDPM; see simplex.py)


def rng_device(generator: torch.Generator | None) -> torch.device:
    """Random numbers are drawn where the generator lives (on the GPU for a GPU trainer: no host work, no copy)."""
    return generator.device if generator is not None else torch.device("cpu")


def choose_conditions(available: torch.Tensor, p_condition: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, C) bool: channels given clean. Never all available ones, so every example has something to learn."""
    draw = torch.rand(available.shape, generator=generator, device=rng_device(generator))
    given = (draw < p_condition).to(available.device) & available
    nothing_left = ~(available & ~given).any(dim=1)
    return given & ~nothing_left[:, None]  # not given[mask] = False: boolean indexing waits for the GPU


def drop_labels(labels: torch.Tensor, null_class: int, p_uncond: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """Unlabelled examples (-1) and a random ``p_uncond`` of the others get the null class."""
    labels = torch.where(labels < 0, torch.full_like(labels, null_class), labels)
    draw = torch.rand(labels.shape[0], generator=generator, device=rng_device(generator))
    drop = (draw < p_uncond).to(labels.device)
    return torch.where(drop, torch.full_like(labels, null_class), labels)


def masked_mse(output: torch.Tensor, target: torch.Tensor, diffused: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error over the diffused channels each example has (B, C bool), per voxel."""
    weight = diffused.to(target.dtype).reshape(diffused.shape + (1,) * (target.dim() - 2))
    per_element = (output.float() - target) ** 2 * weight
    voxels = target[0, 0].numel()
    return per_element.flatten(1).sum(1) / (weight.flatten(1).sum(1) * voxels).clamp_min(1.0)
