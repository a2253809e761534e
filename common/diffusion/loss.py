"""The training objective: denoise the channels a site really has, given a random subset of the others.

Per example, each available channel is given clean as a condition with probability ``p_condition`` (at least
one available channel is always left to diffuse); the loss covers only diffused channels that the example
really has, so a site without t2 never pushes the t2 output anywhere. Class labels are dropped to the null class
with probability ``p_uncond`` so classifier-free guidance works at sampling time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import ConditionalDenoiser
from .schedules import DiscreteVP, Schedule
from .simplex import draw_noise


@dataclass(frozen=True)
class LossConfig:
    p_condition: float = 0.3
    p_uncond: float = 0.1
    noise: str = "gaussian"  # or "simplex" (AnoDDPM; see simplex.py)


def rng_device(generator: torch.Generator | None) -> torch.device:
    """Random numbers are drawn where the generator lives (on the GPU for a GPU trainer: no host work, no copy)."""
    return generator.device if generator is not None else torch.device("cpu")


def sample_times(schedule: Schedule, batch: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform training times: a random step of a discrete schedule, or t ~ U(t_min, 1)."""
    if isinstance(schedule, DiscreteVP):
        index = torch.randint(0, schedule.num_steps, (batch,), generator=generator, device=rng_device(generator))
        return ((index + 1).double() / schedule.num_steps).to(device)
    u = torch.rand(batch, generator=generator, dtype=torch.float64, device=rng_device(generator))
    return (schedule.t_min + (1 - schedule.t_min) * u).to(device)


def choose_conditions(available: torch.Tensor, p_condition: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, C) bool: channels given clean. Never all available ones, so every example has something to learn."""
    draw = torch.rand(available.shape, generator=generator, device=rng_device(generator))
    given = (draw < p_condition).to(available.device) & available
    nothing_left = ~(available & ~given).any(dim=1)
    return given & ~nothing_left[:, None]  # not given[mask] = False: boolean indexing waits for the GPU


def per_example_loss(model: ConditionalDenoiser, schedule: Schedule, x0: torch.Tensor, available: torch.Tensor,
                     labels: torch.Tensor | None = None, config: LossConfig = LossConfig(),
                     generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                     network: torch.nn.Module | None = None) -> torch.Tensor:
    """Masked MSE of the network output against its target (the noise, or the EDM/v target; see
    parametrization.py), per example, shape (B,) (the shape Opacus' ghost clipping needs).

    x0: (B, C, *spatial) in [-1, 1]; available: (B, C) bool; labels: (B,) or None (-1 = unlabelled);
    t: (B,) schedule times, drawn uniformly when None (evaluation passes them to report loss per noise band).
    network: what to call instead of ``model`` (the same model wrapped, e.g. by Opacus for per-example gradients).
    """
    batch = x0.shape[0]
    given = choose_conditions(available, config.p_condition, generator)
    diffused = available & ~given
    t = sample_times(schedule, batch, generator, x0.device) if t is None else t.to(x0.device)
    shape = (batch,) + (1,) * (x0.dim() - 1)
    alpha = schedule.alpha(t).to(x0.dtype).reshape(shape)
    sigma = schedule.sigma(t).to(x0.dtype).reshape(shape)
    noise = draw_noise(config.noise, tuple(x0.shape), generator, x0.dtype).to(x0.device)
    x_t = alpha * x0 + sigma * noise
    if labels is not None and model.schema.num_classes:
        labels = torch.where(labels < 0, torch.full_like(labels, model.null_class), labels)
        draw = torch.rand(batch, generator=generator, device=rng_device(generator))
        drop = (draw < config.p_uncond).to(labels.device)
        labels = torch.where(drop, torch.full_like(labels, model.null_class), labels)
    p = model.parametrization
    output = (network or model)(p.network_input(x_t, alpha, sigma), schedule.network_time(t).to(x0.dtype), x0, given,
                                labels)
    target = p.target(x0, noise, x_t, alpha, sigma)
    weight = diffused.to(x0.dtype).reshape(diffused.shape + (1,) * (x0.dim() - 2))
    per_element = (output.float() - target) ** 2 * weight
    voxels = x0[0, 0].numel()
    return per_element.flatten(1).sum(1) / (weight.flatten(1).sum(1) * voxels).clamp_min(1.0)
