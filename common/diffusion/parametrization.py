"""What the network predicts, and how its output becomes the noise estimate every sampler uses.

``eps``: the network predicts the noise directly (DDPM). ``v`` (the default): the EDM preconditioning of Karras
et al. (2022) written for any (alpha, sigma) schedule; for VP schedules with sigma_data = 1 it is v-prediction.
With r = sqrt(alpha^2 sigma_d^2 + sigma^2) (the std of x_t for data of std sigma_d):

    network input  x_t / r                         (unit variance at every t, VE included)
    x0 estimate    sigma_d^2 alpha / r^2 x_t + sigma sigma_d / r F

Why: with eps-prediction the x0 estimate at high noise is (x_t - sigma eps) / alpha with alpha ~ 0.006, so a
small eps error ruins the global layout; a short training run then samples grey backgrounds. The F target has
unit variance at all noise levels, so the model learns the layout early. The samplers see x0 (denoiser.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor
PREDICTIONS = ("v", "eps")


@dataclass(frozen=True)
class Parametrization:
    prediction: str = "v"
    sigma_data: float = 0.5

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

    def _r(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        return torch.sqrt(alpha**2 * self.sigma_data**2 + sigma**2)

    def network_input(self, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        return x_t if self.prediction == "eps" else x_t / self._r(alpha, sigma)

    def x0(self, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """The clean-image estimate from the network output (alpha, sigma broadcastable to x_t)."""
        if self.prediction == "eps":
            return (x_t - sigma * output) / alpha
        r = self._r(alpha, sigma)
        return self.sigma_data**2 * alpha / r**2 * x_t + sigma * self.sigma_data / r * output

    def target(self, x0: Tensor, noise: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """What the network output should be for x_t = alpha x0 + sigma noise."""
        if self.prediction == "eps":
            return noise
        r = self._r(alpha, sigma)
        return (x0 - self.sigma_data**2 * alpha / r**2 * x_t) * r / (sigma * self.sigma_data)
