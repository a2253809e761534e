"""Noise schedules behind one interface: x_t = alpha(t) x_0 + sigma(t) eps, for t in [0, 1].

DDPM (discrete VP, linear or cosine betas), NCSN (VE, geometric sigmas) and the score SDEs (VP, sub-VP, VE)
are all Gaussian diffusions, so one parametrisation serves every formulation: the network predicts eps, the
score is -eps / sigma, and the SDE drift f(t) and squared diffusion g^2(t) follow from alpha and sigma
(f = d log alpha / dt, g^2 = d sigma^2 / dt - 2 f sigma^2). t = 0 is always clean data (alpha 1, sigma 0).

A schedule also owns everything time-related its users need, so that none of them asks which kind it is: the
training times, the prior sample, the sampling time grids (uniform, or even in log-SNR) and the time at which
the noise-to-signal ratio sigma / alpha takes a given value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


class Schedule:
    """Base: subclasses give log_alpha(t) and sigma(t) for t in (0, 1], and their derivatives."""

    name = "schedule"
    t_min = 1e-3  # smallest time a continuous sampler steps to before the final denoising step

    def log_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return torch.where(t <= 0, torch.ones_like(t), torch.exp(self.log_alpha(t.clamp_min(1e-12))))

    def sigma(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return torch.where(t <= 0, torch.zeros_like(t), self._sigma(t.clamp_min(1e-12)))

    def drift_and_diffusion2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """f(t) and g(t)^2 of the forward SDE dx = f x dt + g dw, by central differences of alpha and sigma."""
        t = torch.as_tensor(t, dtype=torch.float64)
        h = 1e-4
        lo, hi = (t - h).clamp_min(1e-6), (t + h).clamp_max(1.0)
        f = (self.log_alpha(hi) - self.log_alpha(lo)) / (hi - lo)
        dvar = (self._sigma(hi) ** 2 - self._sigma(lo) ** 2) / (hi - lo)
        return f, dvar - 2 * f * self._sigma(t) ** 2

    def prior_std(self) -> float:
        return float(self.sigma(torch.tensor(1.0)))

    def network_time(self, t: Tensor) -> Tensor:
        """What the network's time embedding receives (0..1000 like MONAI's schedulers)."""
        return t * 1000.0

    def sampling_times(self, steps: int, start_t: float = 1.0) -> Tensor:
        """Descending times from start_t to t_min, then 0 (a final step to clean data): steps + 1 values."""
        grid = torch.linspace(start_t, self.t_min, steps, dtype=torch.float64)
        return torch.cat([grid, torch.zeros(1, dtype=torch.float64)])

    def logsnr_times(self, steps: int, start_t: float = 1.0) -> Tensor:
        """Times evenly spaced in log-SNR lambda = log(alpha / sigma) from start_t to t_min, then 0.

        Few-step solvers (DPM-Solver) are exact for the linear part in lambda; this spacing is what they need.
        """
        dense = torch.linspace(self.t_min, start_t, 4001, dtype=torch.float64)
        lam = self.log_alpha(dense) - torch.log(self._sigma(dense))  # decreasing in t
        targets = torch.linspace(float(lam[-1]), float(lam[0]), steps, dtype=torch.float64)
        # interpolate t(lambda) on the dense grid (lambda is monotone, so flip to increasing order)
        lam_inc, t_inc = lam.flip(0), dense.flip(0)
        idx = torch.searchsorted(lam_inc, targets).clamp(1, len(lam_inc) - 1)
        w = (targets - lam_inc[idx - 1]) / (lam_inc[idx] - lam_inc[idx - 1])
        times = t_inc[idx - 1] + w * (t_inc[idx] - t_inc[idx - 1])
        times[0], times[-1] = start_t, self.t_min
        return torch.cat([times, torch.zeros(1, dtype=torch.float64)])

    def time_grid(self, steps: int, start_t: float = 1.0, spacing: str = "uniform") -> Tensor:
        """The descending grid a sampler walks (steps + 1 times, the last 0): uniform in t, or in log-SNR."""
        return self.logsnr_times(steps, start_t) if spacing == "logsnr" else self.sampling_times(steps, start_t)

    def training_times(self, batch: int, generator: torch.Generator | None, device) -> Tensor:
        """(batch,) uniform training times t ~ U(t_min, 1), drawn where the generator lives."""
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=_rng_device(generator))
        return (self.t_min + (1 - self.t_min) * u).to(device)

    def prior_sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
                     device: str | torch.device = "cpu") -> Tensor:
        """A draw from the prior at t = 1: N(0, sigma(1)^2) (float32)."""
        noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
        return noise * self.prior_std()

    def candidate_times(self) -> Tensor:
        """The times a continuous schedule is searched on (a discrete one has its own steps)."""
        return torch.linspace(self.t_min, 1.0, 4001, dtype=torch.float64)

    def time_for_noise_ratio(self, ratio: float) -> float:
        """The time t (on the schedule's own grid when discrete) whose sigma(t) / alpha(t) is closest to ``ratio``:
        where an image with that much noise enters the reverse process (denoising)."""
        grid = self.candidate_times()
        ratios = self.sigma(grid) / self.alpha(grid)
        return float(grid[torch.argmin((torch.log(ratios) - math.log(max(ratio, 1e-8))).abs())])


def _rng_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


class DiscreteVP(Schedule):
    """DDPM: T discrete steps with betas; step i (0-based) is t = (i + 1) / T."""

    name = "ddpm"

    def __init__(self, betas: Tensor) -> None:
        self.betas = torch.as_tensor(betas, dtype=torch.float64)
        self.num_steps = len(self.betas)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self.t_min = 1.0 / self.num_steps
        self._log_acp = torch.log(self.alphas_cumprod)
        self._tables: dict[torch.device, Tensor] = {}  # log alpha-bar copied once to each device it is used on

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> "DiscreteVP":
        return cls(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008) -> "DiscreteVP":
        """Nichol & Dhariwal's cosine schedule (betas clipped at 0.999)."""
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return cls(torch.clamp(1 - f[1:] / f[:-1], max=0.999))

    def index(self, t: Tensor) -> Tensor:
        return (torch.as_tensor(t) * self.num_steps).round().long().clamp(1, self.num_steps) - 1

    def log_alpha(self, t: Tensor) -> Tensor:
        # piecewise-linear in t between the discrete steps; exact at t = (i + 1) / T
        pos = (torch.as_tensor(t, dtype=torch.float64) * self.num_steps - 1).clamp(0, self.num_steps - 1)
        lo = pos.floor().long().clamp(max=self.num_steps - 1)
        hi = (lo + 1).clamp(max=self.num_steps - 1)
        w = pos - lo
        table = self._table_on(pos.device)
        return 0.5 * ((1 - w) * table[lo] + w * table[hi])

    def _table_on(self, device: torch.device) -> Tensor:
        """log alpha-bar on the device of the times (a GPU trainer's times live on the GPU), copied once."""
        if device.type == "cpu":
            return self._log_acp
        if device not in self._tables:
            self._tables[device] = self._log_acp.to(device)
        return self._tables[device]

    def _sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def network_time(self, t: Tensor) -> Tensor:
        return self.index(t).to(torch.float32)

    def training_times(self, batch: int, generator: torch.Generator | None, device) -> Tensor:
        """(batch,) random steps of the discrete schedule, as times (i + 1) / T."""
        index = torch.randint(0, self.num_steps, (batch,), generator=generator, device=_rng_device(generator))
        return ((index + 1).double() / self.num_steps).to(device)

    def candidate_times(self) -> Tensor:
        return (torch.arange(self.num_steps, dtype=torch.float64) + 1) / self.num_steps

    def sampling_times(self, steps: int, start_t: float = 1.0) -> Tensor:
        """Evenly spaced step indices from start_t's step down ('trailing': the first step is pure noise)."""
        start = int(round(start_t * self.num_steps)) - 1
        steps = min(steps, start + 1)
        ratio = (start + 1) / steps
        indices = torch.round(start - torch.arange(steps, dtype=torch.float64) * ratio).clamp(0, start)
        return torch.cat([(indices + 1) / self.num_steps, torch.zeros(1, dtype=torch.float64)])


@dataclass
class VPSDE(Schedule):
    """Score SDE, variance preserving: beta(t) = beta_min + t (beta_max - beta_min)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    name = "vp"

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))


@dataclass
class SubVPSDE(VPSDE):
    """Score SDE, sub-variance preserving: sigma(t) = 1 - alpha(t)^2 (smaller than VP's)."""

    name = "subvp"

    def _sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(2 * self.log_alpha(t))


@dataclass
class VESDE(Schedule):
    """Score SDE, variance exploding (NCSN's noise levels made continuous): sigma(t) geometric, alpha = 1."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    name = "ve"
    t_min = 1e-5

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(torch.as_tensor(t, dtype=torch.float64))

    def _sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def network_time(self, t: Tensor) -> Tensor:
        return torch.log(self.sigma(t).clamp_min(1e-12)).to(torch.float32) * 100.0  # NCSN conditions on sigma


def ncsn_sigmas(sigma_min: float, sigma_max: float, levels: int) -> Tensor:
    """NCSN's geometric noise levels, largest first."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), levels, dtype=torch.float64))


SCHEDULES = {"ddpm": lambda: DiscreteVP.linear(), "ddpm-cosine": lambda: DiscreteVP.cosine(), "vp": VPSDE,
             "subvp": SubVPSDE, "ve": VESDE}


def make_schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]()
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None
