"""Measurement noise models of the denoising task, applied to [0, 1] images."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def add_noise(clean: Tensor, model: str, level: float, generator: torch.Generator) -> Tensor:
    """Noisy [0, 1] images under a measurement noise model.

    gaussian: clean + N(0, level^2). rician: MR magnitude |clean + n1 + i n2| with n1, n2 ~ N(0, level^2).
    poisson: Poisson(clean * peak) / peak with peak = 1 / level^2 counts at intensity 1 (low-count PET/CT-like),
    so the noise std at intensity 1 equals ``level``.
    """
    if level <= 0:
        raise ValueError(f"noise level must be > 0, got {level}")
    if model == "gaussian":
        return clean + level * torch.randn(clean.shape, generator=generator)
    if model == "rician":
        real = clean + level * torch.randn(clean.shape, generator=generator)
        imaginary = level * torch.randn(clean.shape, generator=generator)
        return torch.sqrt(real**2 + imaginary**2)
    if model == "poisson":
        peak = 1.0 / level**2
        return torch.poisson(clean.clamp_min(0) * peak, generator=generator) / peak
    raise ValueError(f"unknown noise model {model!r}; choose gaussian, rician or poisson")


from .settings import NOISE_MODELS  # noqa: F401 (re-exported)
