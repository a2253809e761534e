"""K draws of one channel given others: what segmentation and translation both ask of the global model.

With a latent model the given channels are encoded, the draw is made in latent space (never clipped to the pixel
range) and only the drawn channel's latents are decoded."""

from __future__ import annotations

import torch

from ..common.diffusion.generate import Conditioning, sample
from ..common.diffusion.loading import LoadedModel

Tensor = torch.Tensor


def draw_channel(loaded: LoadedModel, images: Tensor, given: Tensor, channel: int, *, samples: int, sampler: str,
                 steps: int, batch_size: int, seed: int = 0) -> Tensor:
    """(samples, N, *spatial) model-unit draws of ``channel`` with the ``given`` (N, C) channels of ``images``
    (N, C, *spatial) fed clean; each draw from its own noise."""
    if given[:, channel].any():
        raise ValueError("the channel being drawn cannot also be given")
    generator = torch.Generator(loaded.device).manual_seed(seed)
    codec = loaded.codec
    out = []
    for first in range(0, images.shape[0], batch_size):
        rows = slice(first, first + batch_size)
        if codec is None:
            conditioning = Conditioning(images[rows].to(loaded.device), given[rows].to(loaded.device))
        else:
            conditioning = Conditioning(codec.encode(images[rows], given[rows]).to(loaded.device),
                                        codec.latent_available(given[rows]).to(loaded.device))
        draws = []
        for _ in range(samples):
            x = sample(loaded.denoiser, conditioning, sampler=sampler, steps=steps, generator=generator,
                       clip_denoised=codec is None)
            draws.append((x[:, channel] if codec is None else codec.decode(x[:, codec.rows(channel)])[:, 0]).cpu())
        out.append(torch.stack(draws))
    return torch.cat(out, dim=1)
