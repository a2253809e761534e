"""Sampling from the conditional model: the call every task makes, with classifier-free guidance.

Given channels are fed clean to the network (they are never diffused), a class label steers the sample, and
the guidance scale w mixes the conditional and the unconditional (null-class) predictions:
eps = eps_null + w (eps_class - eps_null); w = 1 is the plain conditional model, w = 0 ignores the class.

Data lie in [-1, 1], so the denoised estimate x0 = (x - sigma eps) / alpha is clipped to that range and eps
recomputed from it (DDPM's ``clip_sample``, applied in the denoiser so that every sampler gets it). Near t = 1
alpha is ~0.006 and an eps error of 0.01 would move x0 by ~1.5; without the clip an imperfect network can
push a few-step sampler out of the data range for good.

On CUDA the network runs under bf16 autocast, compiled, and as one replayed CUDA graph per step (fast_paths.py);
``precision="fp32"`` and ``FastPaths(...="off")`` turn these off.

``denoised_fn(x0, t)`` edits the denoised estimate the same way, after the clip: the tasks pass a projection onto
their measurements there (data consistency in the style of DDNM, Wang et al. 2023), so every sampler gets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .fast_paths import CompiledWithFallback, FastPaths, graphed
from .model import ConditionalDenoiser
from .samplers import EpsFn, Hook, get_sampler
from .schedules import Schedule

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


DenoisedFn = Callable[[Tensor, Tensor], Tensor]


def guided_eps_fn(model: ConditionalDenoiser, schedule: Schedule, conditioning: Conditioning,
                  guidance_scale: float = 1.0, clip_denoised: bool = True,
                  denoised_fn: DenoisedFn | None = None, forward: Callable | None = None,
                  cuda_graph: bool = False) -> EpsFn:
    """eps_fn(x, t) for the samplers: the network at schedule time t, with classifier-free guidance.

    x: (B, C, *spatial); t: (B,) schedule times in [0, 1]. Returns eps of the same shape as x.
    forward: what to call instead of ``model`` (the compiled model); cuda_graph: replay the network as a CUDA
    graph per input shape (captured once per model and shape).
    """
    labels = conditioning.labels
    guided = labels is not None and model.schema.num_classes > 0 and guidance_scale != 1.0

    p = model.parametrization
    forward = forward or model
    if cuda_graph:
        forward = graphed(model, forward)

    def network(x: Tensor, time: Tensor) -> Tensor:
        cond = conditioning.condition.to(x.dtype)
        if not guided:
            return forward(x, time, cond, conditioning.given, labels)
        null = torch.full_like(labels, model.null_class)
        both = forward(torch.cat([x, x]), torch.cat([time, time]), torch.cat([cond, cond]),
                     torch.cat([conditioning.given, conditioning.given]), torch.cat([labels, null]))
        out_class, out_null = both.chunk(2)
        return out_null + guidance_scale * (out_class - out_null)  # eps is affine in the output: same mix

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        shape = (-1,) + (1,) * (x.dim() - 1)
        alpha = schedule.alpha(t).to(device=x.device, dtype=x.dtype).reshape(shape)
        sigma = schedule.sigma(t).to(device=x.device, dtype=x.dtype).reshape(shape)
        time = schedule.network_time(t).to(device=x.device, dtype=x.dtype)
        eps = p.eps(network(p.network_input(x, alpha, sigma), time).to(x.dtype), x, alpha, sigma)
        if not clip_denoised and denoised_fn is None:
            return eps
        x0 = (x - sigma * eps) / alpha
        x0 = x0.clamp(-1.0, 1.0) if clip_denoised else x0
        x0 = denoised_fn(x0, t) if denoised_fn is not None else x0
        return (x - alpha * x0) / sigma

    return eps_fn


COMPILE_MIN_IMAGE_STEPS = 10_000  # "auto" compiles only when the sampling work repays ~1 min of compiling


def compiled(model: ConditionalDenoiser) -> CompiledWithFallback:
    """The model's compiled forward, compiled once per model object and kept with it."""
    if "_compiled" not in model.__dict__:
        model.__dict__["_compiled"] = CompiledWithFallback(model)
    return model.__dict__["_compiled"]


@torch.no_grad()
def sample(model: ConditionalDenoiser, schedule: Schedule, conditioning: Conditioning, *, sampler: str = "ddim",
           steps: int = 50, guidance_scale: float = 1.0, clip_denoised: bool = True,
           generator: torch.Generator | None = None, x_start: Tensor | None = None, start_t: float = 1.0,
           hook: Hook = None, denoised_fn: DenoisedFn | None = None, precision: str = "auto",
           fast_paths: FastPaths = FastPaths(), **sampler_options) -> Tensor:
    """Samples of shape conditioning.condition.shape, in [-1, 1], with given channels equal to the condition.

    x_start: the (partially) noised start at ``start_t``; by default pure prior noise at t = 1.
    generator: on the model's device (the samplers draw their noise with it).
    precision: "auto" (bf16 autocast on CUDA), "fp32" or "bf16"; the sampler's own arithmetic stays fp32.
    """
    model.eval()
    reference = conditioning.condition
    device = reference.device
    if x_start is None:
        noise = torch.randn(reference.shape, generator=generator, dtype=torch.float32, device=device)
        x_start = noise * schedule.prior_std()
    on = fast_paths.resolved(device)
    worth_compiling = fast_paths.compile == "on" or steps * reference.shape[0] >= COMPILE_MIN_IMAGE_STEPS
    forward = compiled(model) if on["compile"] and worth_compiling else None
    eps_fn = guided_eps_fn(model, schedule, conditioning, guidance_scale, clip_denoised, denoised_fn, forward,
                           cuda_graph=on["cuda_graphs"])
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    # the autocast cast cache cannot live across a CUDA graph capture (torch.cuda.graph's documentation)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=not on["cuda_graphs"]):
        x = get_sampler(sampler)(eps_fn, x_start, schedule, steps, generator, start_t=start_t, hook=hook,
                                 **sampler_options)
    x = x.clamp(-1.0, 1.0)
    g = conditioning.given.reshape(conditioning.given.shape + (1,) * (x.dim() - 2)).to(x.dtype)
    return x * (1 - g) + reference.to(x.dtype) * g
