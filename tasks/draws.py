"""K draws of one channel given others: what segmentation and translation both ask of the global model."""

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
    out = []
    for first in range(0, images.shape[0], batch_size):
        rows = slice(first, first + batch_size)
        conditioning = Conditioning(images[rows].to(loaded.device), given[rows].to(loaded.device))
        out.append(torch.stack([sample(loaded.denoiser, conditioning, sampler=sampler, steps=steps,
                                       generator=generator)[:, channel].cpu() for _ in range(samples)]))
    return torch.cat(out, dim=1)
