"""Sampling from the conditional model: the call every task makes.

Given channels are fed clean to the network (they are never diffused) and come back unchanged; a class label
steers the sample, with classifier-free guidance when the scale is not 1; every estimate is clipped to [-1, 1]
and, when a task passes ``project``, moved onto its measurements (guidance.py). The sampler walks the grid its
registry entry asks for (samplers.py), built here from the denoiser's schedule.

On CUDA the network runs under bf16 autocast, compiled, and as one replayed CUDA graph per step (fast_paths.py);
``precision="fp32"`` and ``FastPaths(...="off")`` turn these off.
"""

from __future__ import annotations

import torch

from .denoiser import Conditioning, Denoiser
from .fast_paths import FastPaths, graphed
from .guidance import Clipped, Projected, Projection, bind
from .samplers import Callback, get_sampler

Tensor = torch.Tensor
COMPILE_MIN_IMAGE_STEPS = 10_000  # "auto" compiles only when the sampling work repays ~1 min of compiling

__all__ = ["Conditioning", "Denoiser", "sample", "COMPILE_MIN_IMAGE_STEPS"]


def _network(denoiser: Denoiser, fast_paths: FastPaths, device: torch.device, image_steps: int):
    """What runs the model: plain, compiled (when it pays off) and/or replayed as CUDA graphs."""
    on = fast_paths.resolved(device)
    worth_compiling = fast_paths.compile == "on" or image_steps >= COMPILE_MIN_IMAGE_STEPS
    forward = denoiser.compiled_network() if on["compile"] and worth_compiling else denoiser.model
    return graphed(denoiser.graphs, forward) if on["cuda_graphs"] else (None if forward is denoiser.model else forward)


@torch.no_grad()
def sample(denoiser: Denoiser, conditioning: Conditioning, *, sampler: str = "ddim", steps: int = 50,
           guidance_scale: float = 1.0, clip_denoised: bool = True, generator: torch.Generator | None = None,
           x_start: Tensor | None = None, start_t: float = 1.0, callback: Callback = None,
           project: Projection | None = None, precision: str = "auto", fast_paths: FastPaths = FastPaths(),
           **sampler_options) -> Tensor:
    """Samples of shape conditioning.condition.shape, in [-1, 1], with given channels equal to the condition.

    clip_denoised: clip every estimate and the result to [-1, 1] (the pixel range; off for latents).
    x_start: the (partially) noised start at ``start_t``; by default a prior draw at t = 1.
    generator: on the model's device (the samplers draw their noise with it).
    precision: "auto" (bf16 autocast on CUDA), "fp32" or "bf16"; the sampler's own arithmetic stays fp32.
    """
    denoiser.model.eval()
    reference = conditioning.condition
    device = reference.device
    schedule = denoiser.schedule
    if x_start is None:
        x_start = schedule.prior_sample(tuple(reference.shape), generator, device)
    network = _network(denoiser, fast_paths, device, steps * reference.shape[0])
    estimate = bind(denoiser, conditioning, guidance_scale, network)
    estimate = Clipped(estimate) if clip_denoised else estimate
    estimate = Projected(estimate, project) if project is not None else estimate
    chosen = get_sampler(sampler)
    times = schedule.time_grid(steps, start_t, chosen.spacing)
    on_cuda_graphs = fast_paths.resolved(device)["cuda_graphs"]
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    # the autocast cast cache cannot live across a CUDA graph capture (torch.cuda.graph's documentation)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=not on_cuda_graphs):
        x = chosen.run(estimate, x_start, times, generator, callback, **sampler_options)
    x = x.clamp(-1.0, 1.0) if clip_denoised else x  # a latent model's latents are not in the pixel range
    g = conditioning.given.reshape(conditioning.given.shape + (1,) * (x.dim() - 2)).to(x.dtype)
    return x * (1 - g) + reference.to(x.dtype) * g
