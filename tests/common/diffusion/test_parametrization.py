"""The v/EDM parametrisation: the target converts back to the exact noise, on every schedule."""

from __future__ import annotations

import pytest
import torch

from meddiff.common.diffusion.parametrization import Parametrization
from meddiff.common.diffusion.schedules import make_schedule


@pytest.mark.parametrize("schedule_name", ["ddpm", "ddpm-cosine", "vp", "subvp", "ve"])
@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_the_target_is_the_output_that_recovers_the_noise(schedule_name, prediction):
    schedule, p = make_schedule(schedule_name), Parametrization(prediction)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand((6, 2, 4, 4), generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.002, 0.05, 0.3, 0.6, 0.9, 1.0], dtype=torch.float64)
    alpha, sigma = schedule.alpha(t).reshape(-1, 1, 1, 1), schedule.sigma(t).reshape(-1, 1, 1, 1)
    x_t = alpha * x0 + sigma * noise
    target = p.target(x0, noise, x_t, alpha, sigma)
    recovered = (x_t - alpha * p.x0(target, x_t, alpha, sigma)) / sigma  # the noise the x0 estimate implies
    assert torch.allclose(recovered, noise, atol=1e-8)


def test_v_inputs_and_targets_have_unit_scale_at_every_noise_level():
    schedule, p = make_schedule("ve"), Parametrization("v", sigma_data=0.5)
    generator = torch.Generator().manual_seed(1)
    x0 = 0.5 * torch.randn((4000, 1), generator=generator, dtype=torch.float64)
    for t in (0.05, 0.5, 1.0):
        time = torch.tensor(t, dtype=torch.float64)
        alpha, sigma = schedule.alpha(time), schedule.sigma(time)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        x_t = alpha * x0 + sigma * noise
        assert p.network_input(x_t, alpha, sigma).std() == pytest.approx(1.0, abs=0.05)
        assert p.target(x0, noise, x_t, alpha, sigma).std() == pytest.approx(1.0, abs=0.05)
