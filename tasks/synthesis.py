"""Synthetic data generation, the first task: draws from the global model, per class or given some channels.

A latent model samples latents (given channels encoded, never clipped to the pixel range) and decodes them; the
given pixel channels come back exactly as they were given, as from a pixel model."""

from __future__ import annotations

import time

import torch

from ..common.diffusion.generate import Conditioning, sample
from ..common.diffusion.loading import LoadedModel
from ..common.progress import step_progress

Tensor = torch.Tensor


def synthesize(loaded: LoadedModel, n: int, labels: Tensor | None, condition: Tensor, given: Tensor, *,
               sampler: str = "ddim", steps: int = 50, guidance: float = 1.0, batch_size: int = 64, seed: int = 0,
               progress: bool = True) -> tuple[Tensor, float]:
    """(N, C, *spatial) samples in [-1, 1] on the CPU and the seconds they took. labels: (N,) class indices or
    None; condition: (C, *spatial) values of the ``given`` (C,) channels, the same for every sample."""
    generator = torch.Generator(loaded.device).manual_seed(seed)
    codec, pixel_condition, pixel_given = loaded.codec, condition, given
    if codec is not None:
        latent_shape = (codec.latent_channels * condition.shape[0],
                        *(codec.latent_size(s) for s in condition.shape[1:]))
        condition = codec.encode(condition[None], given[None])[0].cpu() if given.any() \
            else torch.zeros(latent_shape)
        given = codec.latent_available(given[None])[0]
    batches, start = [], time.perf_counter()
    with step_progress((n + batch_size - 1) // batch_size, enabled=progress, description="sampling batches") as advance:
        for first in range(0, n, batch_size):
            b = min(batch_size, n - first)
            conditioning = Conditioning(condition.expand(b, *condition.shape).to(loaded.device),
                                        given.expand(b, -1).to(loaded.device),
                                        None if labels is None else labels[first:first + b].to(loaded.device))
            drawn = sample(loaded.denoiser, conditioning, sampler=sampler, steps=steps, guidance_scale=guidance,
                           generator=generator, clip_denoised=codec is None)
            if codec is not None:
                keep = pixel_given.reshape(-1, *(1,) * (pixel_condition.dim() - 1)).to(pixel_condition.dtype)
                drawn = codec.decode(drawn).cpu() * (1 - keep) + pixel_condition * keep
            batches.append(drawn.cpu())
            advance()
    return torch.cat(batches), time.perf_counter() - start
