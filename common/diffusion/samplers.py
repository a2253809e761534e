"""Samplers: each a short function of (denoiser, x, times, generator, callback).

``denoiser(x, t)`` returns the clean-image estimate x0 of x at times t ((B,), in [0, 1]) and carries its
``schedule`` (denoiser.py; anything that edits x0, such as guidance or data consistency, wraps it). ``times`` is
the descending grid to walk, built outside (``Schedule.time_grid``: uniform, or even in log-SNR for the few-step
solver), from the start time (1 = pure noise; less to start from a partially noised image) to 0, so any sampler
runs on any grid. ``callback(x, t, x0)`` runs after every step with the state at time t and the latest estimate;
it may return a new x (a constraint on the state), or None to leave it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

Tensor = torch.Tensor
Callback = Callable[[Tensor, Tensor, Tensor], Tensor | None] | None


def _coefficients(schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """alpha(t), sigma(t) in x's dtype for one (scalar) time of the grid."""
    return schedule.alpha(t).to(x.dtype), schedule.sigma(t).to(x.dtype)


def _x0(denoiser, x: Tensor, t: Tensor) -> Tensor:
    return denoiser(x, t.to(torch.float32).expand(x.shape[0])).to(x.dtype)


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, dtype=x.dtype, generator=generator, device=x.device)


def _after(callback: Callback, x: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    changed = callback(x, t, x0) if callback else None
    return x if changed is None else changed


def predict_x0(x: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, clip: float | None = None) -> Tensor:
    """x0 from a noise estimate (what an eps-predicting network or an exact score gives)."""
    x0 = (x - sigma * eps) / alpha
    return x0.clamp(-clip, clip) if clip else x0


def score(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """grad log p_t(x) = -eps / sigma with eps = (x - alpha x0) / sigma."""
    return -(x - alpha * x0) / sigma**2


def posterior_step(x: Tensor, x0: Tensor, a_t, s_t, a_s, s_s, noise: Tensor | None) -> Tensor:
    """One ancestral step x_t -> x_s ~ q(x_s | x_t, x0), the DDPM update for any Gaussian schedule."""
    a_ts = a_t / a_s
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    mean = a_s * s2_ts / s_t**2 * x0 + a_ts * s_s**2 / s_t**2 * x
    if noise is None:
        return mean
    return mean + torch.sqrt(torch.clamp(s2_ts * s_s**2 / s_t**2, min=1e-20)) * noise


def ddim_step(x: Tensor, x0: Tensor, a_t, s_t, a_s, s_s, eta: float = 0.0, noise: Tensor | None = None) -> Tensor:
    """x_t -> x_s = a_s x0 + sqrt(s_s^2 - c^2) eps + c z with c = eta * (DDPM posterior std)."""
    eps = (x - a_t * x0) / s_t
    c = eta * torch.sqrt(torch.clamp(s_s**2 / s_t**2 * (s_t**2 - (a_t / a_s) ** 2 * s_s**2), min=0.0))
    out = a_s * x0 + torch.sqrt(torch.clamp(s_s**2 - c**2, min=0.0)) * eps
    return out + c * noise if eta > 0 and noise is not None else out


def ddpm_ancestral(denoiser, x: Tensor, times: Tensor, generator=None, callback: Callback = None,
                   noise_fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020); with fewer steps than T it is DDIM with eta = 1.
    noise_fn(x): the fresh noise of each step, for a model trained with other than Gaussian noise (simplex)."""
    for t, s in zip(times[:-1], times[1:]):
        a_t, s_t = _coefficients(denoiser.schedule, t, x)
        a_s, s_s = _coefficients(denoiser.schedule, s, x)
        x0 = _x0(denoiser, x, t)
        fresh = (noise_fn(x) if noise_fn else _noise(x, generator)) if s > 0 else None
        x = _after(callback, posterior_step(x, x0, a_t, s_t, a_s, s_s, fresh), s, x0)
    return x


def ddim(denoiser, x: Tensor, times: Tensor, generator=None, callback: Callback = None, eta: float = 0.0) -> Tensor:
    """DDIM (Song et al. 2021): deterministic for eta = 0."""
    for t, s in zip(times[:-1], times[1:]):
        a_t, s_t = _coefficients(denoiser.schedule, t, x)
        a_s, s_s = _coefficients(denoiser.schedule, s, x)
        x0 = _x0(denoiser, x, t)
        x = _after(callback, ddim_step(x, x0, a_t, s_t, a_s, s_s, eta, _noise(x, generator) if eta > 0 else None),
                   s, x0)
    return x


def ddim_invert(denoiser, x0: Tensor, times: Tensor) -> Tensor:
    """Deterministic DDIM encoding of clean images along ``times`` read backwards (0 -> the first time): the
    inverse of :func:`ddim` with eta = 0. At t = 0 the noise is the one the denoiser sees at the next time."""
    times = times.flip(0)
    x = x0
    for s, t in zip(times[:-1], times[1:]):
        a_s, s_s = _coefficients(denoiser.schedule, s, x)
        a_t, s_t = _coefficients(denoiser.schedule, t, x)
        if s > 0:
            estimate = _x0(denoiser, x, s)
            eps = (x - a_s * estimate) / s_s
        else:
            eps = (x - a_t * _x0(denoiser, x, t)) / s_t
        x = a_t * ((x - s_s * eps) / a_s) + s_t * eps
    return x


def euler_maruyama(denoiser, x: Tensor, times: Tensor, generator=None, callback: Callback = None) -> Tensor:
    """Reverse-time SDE dx = [f x - g^2 score] dt + g dw, Euler-Maruyama, then one denoising step."""
    schedule, grid = denoiser.schedule, times[:-1]
    for i, t in enumerate(grid):
        s = grid[i + 1] if i + 1 < len(grid) else torch.zeros((), dtype=grid.dtype)
        a_t, s_t = _coefficients(schedule, t, x)
        x0 = _x0(denoiser, x, t)
        f, g2 = (v.to(x.dtype) for v in schedule.drift_and_diffusion2(t))
        dt = float(t - s)
        x = x - (f * x - g2 * score(x, x0, a_t, s_t)) * dt
        if i + 1 < len(grid):
            x = _after(callback, x + torch.sqrt(g2 * dt) * _noise(x, generator), s, x0)
    x = _x0(denoiser, x, grid[-1])
    return _after(callback, x, torch.zeros(()), x)


def _langevin(denoiser, x: Tensor, t: Tensor, snr: float, steps: int, generator) -> Tensor:
    """Langevin corrector at time t with the step size set from a target signal-to-noise ratio (Song et al.)."""
    schedule = denoiser.schedule
    alpha_ratio = torch.exp(2 * (schedule.log_alpha(t) - schedule.log_alpha((t - 1e-3).clamp_min(1e-6)))).clamp(max=1.0)
    a_t, s_t = _coefficients(schedule, t, x)
    for _ in range(steps):
        grad = score(x, _x0(denoiser, x, t), a_t, s_t)
        z = _noise(x, generator)
        grad_norm = torch.linalg.vector_norm(grad.reshape(x.shape[0], -1), dim=1).mean()
        noise_norm = torch.linalg.vector_norm(z.reshape(x.shape[0], -1), dim=1).mean()
        step = 2 * float(alpha_ratio) * (snr * noise_norm / grad_norm) ** 2
        x = x + step * grad + torch.sqrt(2 * step) * z
    return x


def predictor_corrector(denoiser, x: Tensor, times: Tensor, generator=None, callback: Callback = None,
                        snr: float = 0.16, corrector_steps: int = 1) -> Tensor:
    """PC sampling: an Euler-Maruyama predictor step, then Langevin corrector steps at the new time."""
    schedule, grid = denoiser.schedule, times[:-1]
    for i, t in enumerate(grid):
        if corrector_steps:
            x = _langevin(denoiser, x, t, snr, corrector_steps, generator)
        if i + 1 == len(grid):
            break
        s = grid[i + 1]
        a_t, s_t = _coefficients(schedule, t, x)
        x0 = _x0(denoiser, x, t)
        f, g2 = (v.to(x.dtype) for v in schedule.drift_and_diffusion2(t))
        dt = float(t - s)
        x = x - (f * x - g2 * score(x, x0, a_t, s_t)) * dt + torch.sqrt(g2 * dt) * _noise(x, generator)
        x = _after(callback, x, s, x0)
    x = _x0(denoiser, x, grid[-1])
    return _after(callback, x, torch.zeros(()), x)


def probability_flow(denoiser, x: Tensor, times: Tensor, generator=None, callback: Callback = None) -> Tensor:
    """Probability-flow ODE dx/dt = f x - g^2 score / 2, Heun's second-order method, then a denoising step."""
    schedule, grid = denoiser.schedule, times[:-1]

    def velocity(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        a_t, s_t = _coefficients(schedule, t, x)
        x0 = _x0(denoiser, x, t)
        f, g2 = (v.to(x.dtype) for v in schedule.drift_and_diffusion2(t))
        return f * x - 0.5 * g2 * score(x, x0, a_t, s_t), x0

    for t, s in zip(grid[:-1], grid[1:]):
        dt = float(s - t)
        d, x0 = velocity(x, t)
        guess = x + d * dt
        x = _after(callback, x + 0.5 * (d + velocity(guess, s)[0]) * dt, s, x0)
    x = _x0(denoiser, x, grid[-1])
    return _after(callback, x, torch.zeros(()), x)


def annealed_langevin(denoiser, x: Tensor, times: Tensor, generator=None, callback: Callback = None,
                      langevin_steps: int = 10, step_lr: float = 2e-5) -> Tensor:
    """NCSN annealed Langevin dynamics (Song & Ermon 2019) over the grid's noise levels, then denoising."""
    schedule, grid = denoiser.schedule, times[:-1]
    sigma_last = float(schedule.sigma(grid[-1]))
    for t in grid:
        a_t, s_t = _coefficients(schedule, t, x)
        step, x0 = step_lr * (float(s_t) / sigma_last) ** 2, x
        for _ in range(langevin_steps):
            x0 = _x0(denoiser, x, t)
            x = x + 0.5 * step * score(x, x0, a_t, s_t) + (step ** 0.5) * _noise(x, generator)
        x = _after(callback, x, t, x0)
    x = _x0(denoiser, x, grid[-1])
    return _after(callback, x, torch.zeros(()), x)


def dpm_solver_pp_2m(denoiser, x: Tensor, times: Tensor, generator=None, callback: Callback = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep solver of the probability-flow ODE in
    log-SNR, good samples in 10-20 steps on a grid even in log-SNR."""
    x0_prev, h_prev = None, None
    for t, s in zip(times[:-1], times[1:]):
        a_t, s_t = _coefficients(denoiser.schedule, t, x)
        a_s, s_s = _coefficients(denoiser.schedule, s, x)
        x0 = _x0(denoiser, x, t)
        if float(s) == 0.0:
            x = x0
        else:
            h = torch.log(a_s / s_s) - torch.log(a_t / s_t)
            d = x0
            if x0_prev is not None:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = (s_s / s_t) * x - a_s * torch.expm1(-h) * d
            x0_prev, h_prev = x0, h
        x = _after(callback, x, s, x0)
    return x


class Sampler(NamedTuple):
    run: Callable
    spacing: str = "uniform"  # the time grid it is made for (Schedule.time_grid)


SAMPLERS = {
    "ddpm": Sampler(ddpm_ancestral),
    "ddim": Sampler(ddim),
    "euler-maruyama": Sampler(euler_maruyama),
    "pc": Sampler(predictor_corrector),
    "ode": Sampler(probability_flow),
    "langevin": Sampler(annealed_langevin),
    "dpm++2m": Sampler(dpm_solver_pp_2m, "logsnr"),
}


def get_sampler(name: str) -> Sampler:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
