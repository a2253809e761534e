"""The one denoiser: network + schedule + parametrisation behind one call, x0 = D(x_t, t | what is given).

Training and sampling both go through it: ``loss`` is the masked objective (loss.py draws what is given and the
times), ``__call__`` the clean-image estimate every sampler steps with. Nothing else derives alpha, sigma or the
network time. What changes an estimate wraps a bound denoiser (guidance.py: classifier-free guidance, the
[-1, 1] clip, data consistency), so every sampler gets it.

The compiled network and the CUDA graphs (fast_paths.py) are made once per denoiser and kept on it, explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .fast_paths import CompiledWithFallback
from .loss import LossConfig, choose_conditions, drop_labels, masked_mse
from .model import ConditionalDenoiser
from .schedules import Schedule
from .simplex import draw_noise

Tensor = torch.Tensor


@dataclass(frozen=True)
class Conditioning:
    """What is given. condition: (B, C, *spatial) clean values (only given channels are read);
    given: (B, C) bool; labels: (B,) class indices or None for no class."""

    condition: Tensor
    given: Tensor
    labels: Tensor | None = None

    @classmethod
    def nothing(cls, shape: tuple[int, ...], device: str | torch.device = "cpu") -> "Conditioning":
        return cls(torch.zeros(shape, device=device), torch.zeros(shape[:2], dtype=torch.bool, device=device))


@dataclass
class Denoiser:
    """model: the raw network (common/diffusion/model.py); schedule: its noise schedule."""

    model: ConditionalDenoiser
    schedule: Schedule
    compiled: CompiledWithFallback | None = None  # made by ``compiled_network`` when asked, then kept
    graphs: dict = field(default_factory=dict)  # CUDA graphs per input signature (fast_paths.graphed)

    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """alpha(t), sigma(t) as (B, 1, ...) in ``like``'s dtype and device."""
        shape = (-1,) + (1,) * (like.dim() - 1)
        return (self.schedule.alpha(t).to(device=like.device, dtype=like.dtype).reshape(shape),
                self.schedule.sigma(t).to(device=like.device, dtype=like.dtype).reshape(shape))

    def output(self, x: Tensor, t: Tensor, condition: Tensor, given: Tensor, labels: Tensor | None,
               network=None) -> Tensor:
        """The raw network output for x_t at schedule times t (B,), in the parametrisation's units."""
        alpha, sigma = self.coefficients(t, x)
        p = self.model.parametrization
        time = self.schedule.network_time(t).to(device=x.device, dtype=x.dtype)
        return (network or self.model)(p.network_input(x, alpha, sigma), time, condition.to(x.dtype), given, labels)

    def __call__(self, x: Tensor, t: Tensor, conditioning: Conditioning, network=None) -> Tensor:
        """x0 estimate of x: (B, C, *spatial) at times t: (B,)."""
        alpha, sigma = self.coefficients(t, x)
        out = self.output(x, t, conditioning.condition, conditioning.given, conditioning.labels, network)
        return self.model.parametrization.x0(out.to(x.dtype), x, alpha, sigma)

    def compiled_network(self) -> CompiledWithFallback:
        if self.compiled is None:
            self.compiled = CompiledWithFallback(self.model)
        return self.compiled

    def loss(self, x0: Tensor, available: Tensor, labels: Tensor | None = None, config: LossConfig = LossConfig(),
             generator: torch.Generator | None = None, t: Tensor | None = None, network=None,
             shard: slice | None = None) -> Tensor:
        """Masked MSE of the network output against its target, per example, shape (B,) (the shape Opacus' ghost
        clipping needs); see loss.py for what is given and diffused.

        x0: (B, C, *spatial) in [-1, 1]; available: (B, C) bool; labels: (B,) or None (-1 = unlabelled);
        t: (B,) schedule times, drawn by the schedule when None (evaluation passes them per noise band);
        network: what to call instead of the model (the same model wrapped, e.g. by Opacus or DDP);
        shard: the rows this process computes (data-parallel training): every random draw is made for the whole
        batch, as one process would, and the network runs on these rows only, so W processes that each take their
        slice compute exactly the one process's per-example losses."""
        batch = x0.shape[0]
        given = choose_conditions(available, config.p_condition, generator)
        t = self.schedule.training_times(batch, generator, x0.device) if t is None else t.to(x0.device)
        alpha, sigma = self.coefficients(t, x0)
        noise = draw_noise(config.noise, tuple(x0.shape), generator, x0.dtype).to(x0.device)
        x_t = alpha * x0 + sigma * noise
        if labels is not None and self.model.schema.num_classes:
            labels = drop_labels(labels, self.model.null_class, config.p_uncond, generator)
        if shard is not None:
            x0, noise, x_t, t, alpha, sigma, given, available = (
                v[shard] for v in (x0, noise, x_t, t, alpha, sigma, given, available))
            labels = labels[shard] if labels is not None else None
        output = self.output(x_t, t, x0, given, labels, network)
        target = self.model.parametrization.target(x0, noise, x_t, alpha, sigma)
        return masked_mse(output, target, available & ~given)
