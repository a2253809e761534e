"""Samplers: each a short function of (eps_fn, x, schedule, steps, generator, start_t, hook).

``eps_fn(x, t)`` predicts the noise in x at times t (shape (B,), in [0, 1]); the score is -eps / sigma(t).
Every sampler walks the schedule's time grid from ``start_t`` (1 = pure noise; less to start from a partially
noised image) to 0 and returns clean samples. ``hook(x, t, x0)`` runs after every step and may return a new x:
later issues use it for data consistency (reconstruction, super-resolution) and guidance.
"""

from __future__ import annotations

from typing import Callable

import torch

from .schedules import Schedule, logsnr_times

Tensor = torch.Tensor
EpsFn = Callable[[Tensor, Tensor], Tensor]
Hook = Callable[[Tensor, Tensor, Tensor], Tensor] | None


def _coefficients(schedule: Schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """alpha(t), sigma(t) in x's dtype for one (scalar) time of the sampling grid."""
    return schedule.alpha(t).to(x.dtype), schedule.sigma(t).to(x.dtype)


def _eps(eps_fn: EpsFn, x: Tensor, t: Tensor) -> Tensor:
    return eps_fn(x, t.to(torch.float32).expand(x.shape[0]))


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, dtype=x.dtype, generator=generator, device=x.device)


def predict_x0(x: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, clip: float | None = None) -> Tensor:
    x0 = (x - sigma * eps) / alpha
    return x0.clamp(-clip, clip) if clip else x0


def posterior_step(x: Tensor, eps: Tensor, a_t, s_t, a_s, s_s, noise: Tensor | None, clip: float | None = None):
    """One ancestral step x_t -> x_s ~ q(x_s | x_t, x0_pred), the DDPM update for any Gaussian schedule."""
    x0 = predict_x0(x, eps, a_t, s_t, clip)
    a_ts = a_t / a_s
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    mean = a_s * s2_ts / s_t**2 * x0 + a_ts * s_s**2 / s_t**2 * x
    if noise is None:
        return mean, x0
    return mean + torch.sqrt(torch.clamp(s2_ts * s_s**2 / s_t**2, min=1e-20)) * noise, x0


def ddim_step(x: Tensor, eps: Tensor, a_t, s_t, a_s, s_s, eta: float = 0.0, noise: Tensor | None = None,
              clip: float | None = None):
    """x_t -> x_s = a_s x0 + sqrt(s_s^2 - c^2) eps + c z with c = eta * (DDPM posterior std)."""
    x0 = predict_x0(x, eps, a_t, s_t, clip)
    c = eta * torch.sqrt(torch.clamp(s_s**2 / s_t**2 * (s_t**2 - (a_t / a_s) ** 2 * s_s**2), min=0.0))
    out = a_s * x0 + torch.sqrt(torch.clamp(s_s**2 - c**2, min=0.0)) * eps
    if eta > 0 and noise is not None:
        out = out + c * noise
    return out, x0


def ddpm_ancestral(eps_fn: EpsFn, x: Tensor, schedule: Schedule, steps: int = 1000, generator=None,
                   start_t: float = 1.0, hook: Hook = None, clip: float | None = None,
                   noise_fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020); with fewer steps than T it is DDIM with eta = 1.
    noise_fn(x): the fresh noise of each step, for a model trained with other than Gaussian noise (simplex)."""
    times = schedule.sampling_times(steps, start_t)
    for t, s in zip(times[:-1], times[1:]):
        a_t, s_t = _coefficients(schedule, t, x)
        a_s, s_s = _coefficients(schedule, s, x)
        eps = _eps(eps_fn, x, t)
        fresh = (noise_fn(x) if noise_fn else _noise(x, generator)) if s > 0 else None
        x, x0 = posterior_step(x, eps, a_t, s_t, a_s, s_s, fresh, clip)
        x = hook(x, s, x0) if hook else x
    return x


def ddim(eps_fn: EpsFn, x: Tensor, schedule: Schedule, steps: int = 50, generator=None, start_t: float = 1.0,
         hook: Hook = None, eta: float = 0.0, clip: float | None = None) -> Tensor:
    """DDIM (Song et al. 2021): deterministic for eta = 0."""
    times = schedule.sampling_times(steps, start_t)
    for t, s in zip(times[:-1], times[1:]):
        a_t, s_t = _coefficients(schedule, t, x)
        a_s, s_s = _coefficients(schedule, s, x)
        x, x0 = ddim_step(x, _eps(eps_fn, x, t), a_t, s_t, a_s, s_s, eta, _noise(x, generator) if eta > 0 else None,
                          clip)
        x = hook(x, s, x0) if hook else x
    return x


def ddim_invert(eps_fn: EpsFn, x0: Tensor, schedule: Schedule, steps: int = 50, end_t: float = 1.0) -> Tensor:
    """Deterministic DDIM encoding of clean images to x_{end_t} (the inverse of :func:`ddim` with eta = 0)."""
    times = schedule.sampling_times(steps, end_t).flip(0)  # 0 -> end_t
    x = x0
    for s, t in zip(times[:-1], times[1:]):
        a_s, s_s = _coefficients(schedule, s, x)
        a_t, s_t = _coefficients(schedule, t, x)
        eps = _eps(eps_fn, x, s) if s > 0 else _eps(eps_fn, x, t)  # at s = 0 the noise is taken from t
        x0_pred = (x - s_s * eps) / a_s
        x = a_t * x0_pred + s_t * eps
    return x


def _score_step_terms(schedule: Schedule, t: Tensor, x: Tensor, eps: Tensor):
    a_t, s_t = _coefficients(schedule, t, x)
    f, g2 = schedule.drift_and_diffusion2(t)
    return a_t, s_t, f.to(x.dtype), g2.to(x.dtype), -eps / s_t


def _final_denoise(eps_fn: EpsFn, x: Tensor, schedule: Schedule, t: Tensor) -> Tensor:
    a_t, s_t = _coefficients(schedule, t, x)
    return predict_x0(x, _eps(eps_fn, x, t), a_t, s_t)


def euler_maruyama(eps_fn: EpsFn, x: Tensor, schedule: Schedule, steps: int = 500, generator=None,
                   start_t: float = 1.0, hook: Hook = None) -> Tensor:
    """Reverse-time SDE dx = [f x - g^2 score] dt + g dw, Euler-Maruyama, then one denoising step."""
    times = schedule.sampling_times(steps, start_t)[:-1]
    for i, t in enumerate(times):
        s = times[i + 1] if i + 1 < len(times) else torch.zeros((), dtype=times.dtype)
        eps = _eps(eps_fn, x, t)
        _, _, f, g2, score = _score_step_terms(schedule, t, x, eps)
        dt = float(t - s)
        x = x - (f * x - g2 * score) * dt
        if i + 1 < len(times):
            x = x + torch.sqrt(g2 * dt) * _noise(x, generator)
            x = hook(x, s, x) if hook else x
    x = _final_denoise(eps_fn, x, schedule, times[-1])
    return hook(x, torch.zeros(()), x) if hook else x


def _langevin(eps_fn: EpsFn, x: Tensor, schedule: Schedule, t: Tensor, snr: float, steps: int, generator) -> Tensor:
    """Langevin corrector at time t with the step size set from a target signal-to-noise ratio (Song et al.)."""
    alpha_ratio = torch.exp(2 * (schedule.log_alpha(t) - schedule.log_alpha((t - 1e-3).clamp_min(1e-6)))).clamp(max=1.0)
    for _ in range(steps):
        score = -_eps(eps_fn, x, t) / _coefficients(schedule, t, x)[1]
        z = _noise(x, generator)
        grad_norm = torch.linalg.vector_norm(score.reshape(x.shape[0], -1), dim=1).mean()
        noise_norm = torch.linalg.vector_norm(z.reshape(x.shape[0], -1), dim=1).mean()
        step = 2 * float(alpha_ratio) * (snr * noise_norm / grad_norm) ** 2
        x = x + step * score + torch.sqrt(2 * step) * z
    return x


def predictor_corrector(eps_fn: EpsFn, x: Tensor, schedule: Schedule, steps: int = 500, generator=None,
                        start_t: float = 1.0, hook: Hook = None, snr: float = 0.16,
                        corrector_steps: int = 1) -> Tensor:
    """PC sampling: an Euler-Maruyama predictor step, then Langevin corrector steps at the new time."""
    times = schedule.sampling_times(steps, start_t)[:-1]
    for i, t in enumerate(times):
        if corrector_steps:
            x = _langevin(eps_fn, x, schedule, t, snr, corrector_steps, generator)
        s = times[i + 1] if i + 1 < len(times) else None
        if s is None:
            break
        eps = _eps(eps_fn, x, t)
        _, _, f, g2, score = _score_step_terms(schedule, t, x, eps)
        dt = float(t - s)
        x = x - (f * x - g2 * score) * dt + torch.sqrt(g2 * dt) * _noise(x, generator)
        x = hook(x, s, x) if hook else x
    x = _final_denoise(eps_fn, x, schedule, times[-1])
    return hook(x, torch.zeros(()), x) if hook else x


def probability_flow(eps_fn: EpsFn, x: Tensor, schedule: Schedule, steps: int = 100, generator=None,
                     start_t: float = 1.0, hook: Hook = None) -> Tensor:
    """Probability-flow ODE dx/dt = f x - g^2 score / 2, Heun's second-order method, then a denoising step."""
    times = schedule.sampling_times(steps, start_t)[:-1]

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        _, _, f, g2, score = _score_step_terms(schedule, t, x, _eps(eps_fn, x, t))
        return f * x - 0.5 * g2 * score

    for t, s in zip(times[:-1], times[1:]):
        dt = s - t
        d = velocity(x, t)
        guess = x + d * float(dt)
        x = x + 0.5 * (d + velocity(guess, s)) * float(dt)
        x = hook(x, s, x) if hook else x
    x = _final_denoise(eps_fn, x, schedule, times[-1])
    return hook(x, torch.zeros(()), x) if hook else x


def annealed_langevin(eps_fn: EpsFn, x: Tensor, schedule: Schedule, steps: int = 100, generator=None,
                      start_t: float = 1.0, hook: Hook = None, langevin_steps: int = 10,
                      step_lr: float = 2e-5) -> Tensor:
    """NCSN annealed Langevin dynamics (Song & Ermon 2019) over ``steps`` noise levels, then denoising."""
    times = schedule.sampling_times(steps, start_t)[:-1]
    sigma_last = float(schedule.sigma(times[-1]))
    for t in times:
        a_t, s_t = _coefficients(schedule, t, x)
        step = step_lr * (float(s_t) / sigma_last) ** 2
        for _ in range(langevin_steps):
            score = -_eps(eps_fn, x, t) / s_t
            x = x + 0.5 * step * score + (step ** 0.5) * _noise(x, generator)
        x = hook(x, t, x) if hook else x
    x = _final_denoise(eps_fn, x, schedule, times[-1])
    return hook(x, torch.zeros(()), x) if hook else x


def dpm_solver_pp_2m(eps_fn: EpsFn, x: Tensor, schedule: Schedule, steps: int = 20, generator=None,
                     start_t: float = 1.0, hook: Hook = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep solver of the probability-flow ODE in
    log-SNR, good samples in 10-20 steps. Steps are evenly spaced in log-SNR."""
    times = logsnr_times(schedule, steps, start_t)
    x0_prev, h_prev = None, None
    for t, s in zip(times[:-1], times[1:]):
        a_t, s_t = _coefficients(schedule, t, x)
        a_s, s_s = _coefficients(schedule, s, x)
        x0 = predict_x0(x, _eps(eps_fn, x, t), a_t, s_t)
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
        x = hook(x, s, x0) if hook else x
    return x


SAMPLERS = {
    "ddpm": ddpm_ancestral,
    "ddim": ddim,
    "euler-maruyama": euler_maruyama,
    "pc": predictor_corrector,
    "ode": probability_flow,
    "langevin": annealed_langevin,
    "dpm++2m": dpm_solver_pp_2m,
}


def get_sampler(name: str):
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None

