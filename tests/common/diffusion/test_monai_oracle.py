"""Our DDPM and DDIM steps agree with MONAI's schedulers for the same eps, sample and noise (to 1e-5)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from meddiff.common.diffusion.samplers import ddim_step, posterior_step, predict_x0
from meddiff.common.diffusion.schedules import DiscreteVP


def _float64(scheduler):
    """MONAI keeps its schedule in float32; at t <= 1 that alone is off by 3e-4 (1 - 0.9999 in float32), so the
    oracle runs MONAI's own step code in float64 and compares the formulas, not the rounding."""
    scheduler.betas = scheduler.betas.double()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def _ours(monai_scheduler):
    return DiscreteVP(monai_scheduler.betas.double())


def _coeff(schedule, index):
    if index < 0:
        return torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    acp = schedule.alphas_cumprod[index]
    return acp.sqrt(), (1 - acp).sqrt()


@pytest.mark.parametrize("timestep", [999, 500, 37])
def test_ddpm_step_matches_monai_in_float32_away_from_t0(timestep):
    monai = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", clip_sample=False)
    ours = _ours(monai)
    g = torch.Generator().manual_seed(timestep)
    sample, eps = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    expected, _ = monai.step(eps, timestep, sample, generator=torch.Generator().manual_seed(7))
    noise = torch.randn(eps.shape, generator=torch.Generator().manual_seed(7))
    a_t, s_t = _coeff(ours, timestep)
    a_s, s_s = _coeff(ours, timestep - 1)
    x0 = predict_x0(sample.double(), eps.double(), a_t, s_t)
    got = posterior_step(sample.double(), x0, a_t, s_t, a_s, s_s, noise.double())
    torch.testing.assert_close(got.float(), expected, atol=1e-5, rtol=1e-5)


def test_linear_betas_match_monai():
    monai = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta")
    ours = DiscreteVP.linear(1000)
    torch.testing.assert_close(ours.alphas_cumprod.float(), monai.alphas_cumprod, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("timestep", [999, 500, 37, 1, 0])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_matches_monai(timestep, clip):
    monai = _float64(DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", clip_sample=clip))
    ours = _ours(monai)
    g = torch.Generator().manual_seed(timestep)
    sample, eps = torch.randn(2, 3, 16, 16, generator=g).double(), torch.randn(2, 3, 16, 16, generator=g).double()
    expected, _ = monai.step(eps, timestep, sample, generator=torch.Generator().manual_seed(7))
    noise = torch.randn(eps.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    a_t, s_t = _coeff(ours, timestep)
    a_s, s_s = _coeff(ours, timestep - 1)
    x0 = predict_x0(sample, eps, a_t, s_t, clip=1.0 if clip else None)
    got = posterior_step(sample, x0, a_t, s_t, a_s, s_s, noise if timestep > 0 else None)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("timestep", [980, 500, 40, 0])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_monai(timestep, eta):
    monai = DDIMScheduler(num_train_timesteps=1000, schedule="linear_beta", clip_sample=False)
    monai.set_timesteps(50)
    monai = _float64(monai)
    ours = _ours(monai)
    g = torch.Generator().manual_seed(timestep + 1)
    sample, eps = torch.randn(2, 3, 16, 16, generator=g).double(), torch.randn(2, 3, 16, 16, generator=g).double()
    expected, _ = monai.step(eps, timestep, sample, eta=eta, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(eps.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a_t, s_t = _coeff(ours, timestep)
    a_s, s_s = _coeff(ours, timestep - 20)  # MONAI's previous timestep: 1000 // 50 steps back
    got = ddim_step(sample, predict_x0(sample, eps, a_t, s_t), a_t, s_t, a_s, s_s, eta, noise)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
