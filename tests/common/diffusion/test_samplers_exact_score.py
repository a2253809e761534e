"""Every sampler driven by the exact score of known data must reproduce that data's distribution.

For data x0 ~ N(mu, s^2), x_t = alpha x0 + sigma eps is Gaussian, so E[eps | x_t] is known in closed form;
for a mixture of two Gaussians the posterior over components gives it too. A sampler that is wrong in any
coefficient produces the wrong mean, variance or mixture weights.
"""

from __future__ import annotations

import math

import pytest
import torch

from meddiff.common.diffusion.samplers import SAMPLERS, ddim, ddim_invert
from meddiff.common.diffusion.schedules import DiscreteVP, SubVPSDE, VESDE, VPSDE


class ExactDenoiser:
    """The x0 estimate E[x0 | x_t] = (x - sigma E[eps | x_t]) / alpha of a known distribution's exact score."""

    def __init__(self, schedule, eps):
        self.schedule, self.eps = schedule, eps

    def __call__(self, x, t):
        a = self.schedule.alpha(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        s = self.schedule.sigma(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return (x - s * self.eps(x, t)) / a


def run(name, eps, schedule, x, steps, **extra):
    """A registered sampler on the grid it is made for."""
    chosen = SAMPLERS[name]
    return chosen.run(ExactDenoiser(schedule, eps), x, schedule.time_grid(steps, 1.0, chosen.spacing), **extra)

MU, STD = 0.5, 0.3


def gaussian_eps(schedule, mu=MU, std=STD):
    def eps(x, t):
        a = schedule.alpha(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        s = schedule.sigma(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return s * (x - a * mu) / (a**2 * std**2 + s**2)
    return eps


def mixture_eps(schedule, means=(-0.6, 0.6), std=0.15, weights=(0.3, 0.7)):
    def eps(x, t):
        a = schedule.alpha(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        s = schedule.sigma(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        var = a**2 * std**2 + s**2
        logp = torch.stack([math.log(w) - (x - a * m) ** 2 / (2 * var) for m, w in zip(means, weights)])
        resp = torch.softmax(logp, dim=0)
        score = sum(r * (-(x - a * m) / var) for r, m in zip(resp, means))
        return -s * score
    return eps


SCHEDULES = {"ddpm": DiscreteVP.linear(1000), "vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_max=50.0)}  # prior N(0, 50^2) ~ true marginal
CASES = [  # sampler, schedule, steps, extra arguments
    ("ddpm", "ddpm", 1000, {}),
    ("ddpm", "ve", 400, {}),
    ("ddim", "ddpm", 50, {}),
    ("ddim", "ddpm", 500, {"eta": 1.0}),  # stochastic steps need small jumps: x0 is a mean, not a sample
    ("ddim", "vp", 50, {}),
    ("euler-maruyama", "vp", 500, {}),
    ("euler-maruyama", "subvp", 500, {}),
    ("euler-maruyama", "ve", 500, {}),
    ("pc", "vp", 300, {}),
    ("pc", "ve", 300, {}),
    ("ode", "vp", 100, {}),
    ("ode", "ve", 100, {}),
    ("langevin", "ve", 100, {}),
    ("dpm++2m", "ddpm", 20, {}),
    ("dpm++2m", "vp", 20, {}),
]


def _prior(schedule, n, generator):
    return torch.randn(n, 1, generator=generator, dtype=torch.float64) * schedule.prior_std()


@pytest.mark.parametrize("sampler, schedule, steps, extra", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_sampler_reproduces_a_gaussian(sampler, schedule, steps, extra):
    schedule = SCHEDULES[schedule]
    g = torch.Generator().manual_seed(0)
    x = run(sampler, gaussian_eps(schedule), schedule, _prior(schedule, 4000, g), steps, generator=g, **extra)
    assert torch.isfinite(x).all()
    assert abs(x.mean().item() - MU) < 0.03, x.mean().item()
    assert abs(x.std().item() - STD) < 0.03, x.std().item()


@pytest.mark.parametrize("sampler, schedule, steps", [("ddpm", "ddpm", 1000), ("euler-maruyama", "vp", 500),
                                                      ("pc", "ve", 300), ("ode", "vp", 100),
                                                      ("langevin", "ve", 100), ("dpm++2m", "vp", 20)])
def test_sampler_reproduces_mixture_weights(sampler, schedule, steps):
    schedule = SCHEDULES[schedule]
    g = torch.Generator().manual_seed(1)
    extra = {}
    x = run(sampler, mixture_eps(schedule), schedule, _prior(schedule, 4000, g), steps, generator=g, **extra)
    right = (x > 0).double().mean().item()
    assert abs(right - 0.7) < 0.04, right
    assert abs(x[x > 0].mean().item() - 0.6) < 0.05 and abs(x[x < 0].mean().item() + 0.6) < 0.05


def test_ddim_inversion_then_sampling_reconstructs():
    schedule = DiscreteVP.linear(1000)
    eps = gaussian_eps(schedule)
    g = torch.Generator().manual_seed(2)
    x0 = MU + STD * torch.randn(256, 1, generator=g, dtype=torch.float64)
    denoiser, times = ExactDenoiser(schedule, eps), schedule.time_grid(1000)
    latent = ddim_invert(denoiser, x0, times)
    back = ddim(denoiser, latent, times)
    assert (back - x0).abs().max().item() < 0.02  # measured 0.009 (0.033 at 250 steps: a discretisation error)
    # the latent is the closed-form probability-flow encoding of Gaussian data at t = 1
    a, s = schedule.alpha(torch.tensor(1.0)), schedule.sigma(torch.tensor(1.0))
    expected = a * MU + torch.sqrt(a**2 * STD**2 + s**2) * (x0 - MU) / STD
    assert (latent - expected).abs().mean().item() < 0.02


def test_start_t_starts_from_a_partially_noised_image():
    schedule = VPSDE()
    eps = gaussian_eps(schedule)
    g = torch.Generator().manual_seed(3)
    x0 = torch.full((2000, 1), 0.9, dtype=torch.float64)
    t = torch.tensor(0.1, dtype=torch.float64)
    a, s = schedule.alpha(t), schedule.sigma(t)
    xt = a * x0 + s * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    out = ddim(ExactDenoiser(schedule, eps), xt, schedule.time_grid(100, start_t=0.1))
    # For Gaussian data the probability-flow map from time t is affine and known in closed form.
    expected = MU + STD / torch.sqrt(a**2 * STD**2 + s**2) * (xt - a * MU)
    assert (out - expected).abs().mean().item() < 0.01
    assert 0.7 < out.mean().item() < 0.85  # stays near the input 0.9, pulled towards the data mean 0.5


def test_the_callback_is_called_every_step_and_can_enforce_a_constraint():
    schedule = VPSDE()
    calls = []

    def clamp_hook(x, t, x0):
        calls.append(float(t))
        return x.clamp(max=0.55)

    g = torch.Generator().manual_seed(4)
    out = ddim(ExactDenoiser(schedule, gaussian_eps(schedule)), _prior(schedule, 500, g), schedule.time_grid(25),
               callback=clamp_hook)
    assert len(calls) == 25 and calls[-1] == 0.0
    assert out.max().item() <= 0.55
