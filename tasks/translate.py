"""Image-to-image translation: generate a missing contrast given the present ones (the channel-conditional model).

K draws of the target channel with the source channels given clean are averaged (Monte-Carlo estimate of the
posterior mean, the PSNR-optimal output); their per-pixel variance is the uncertainty map. The classical
baseline needs no training: the source contrast histogram-matched to the target's intensity distribution
(the "identity" baseline: each image's quantiles mapped onto a pooled reference histogram).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..common.diffusion.loading import LoadedModel
from .draws import draw_channel

Tensor = torch.Tensor


@dataclass(frozen=True)
class TranslateSettings:
    samples: int = 4  # K draws averaged
    sampler: str = "ddim"
    steps: int = 25
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.samples < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError("samples, steps and batch_size must be >= 1")


def translate(loaded: LoadedModel, images: Tensor, given: Tensor, target: int,
              settings: TranslateSettings = TranslateSettings(), seed: int = 0) -> tuple[Tensor, Tensor]:
    """(mean, variance), each (N, *spatial) in model units, of the target channel given ``given`` channels.
    images: (N, C, *spatial) model units; given: (N, C) bool (the target must not be given)."""
    if given[:, target].any():
        raise ValueError("the target channel cannot also be a source")
    if not given.any(dim=1).all():
        raise ValueError("every example needs at least one source channel")
    draws = draw_channel(loaded, images, given, target, samples=settings.samples, sampler=settings.sampler,
                         steps=settings.steps, batch_size=settings.batch_size, seed=seed)
    return draws.mean(0), draws.var(0, unbiased=False)


def histogram_matched(source: Tensor, reference: Tensor) -> Tensor:
    """The identity baseline: each source image's intensities mapped, by their quantiles, onto the distribution of
    the reference images (the classical histogram matching, as scikit-image does it, against a pooled reference).
    source: (N, *spatial); reference: (M, *spatial) images of the target contrast."""
    pool = np.sort(reference.flatten().numpy())
    pool_quantiles = (np.arange(pool.size) + 1) / pool.size
    out = []
    for image in source.numpy():
        values, inverse, counts = np.unique(image.ravel(), return_inverse=True, return_counts=True)
        quantiles = np.cumsum(counts) / image.size
        out.append(np.interp(quantiles, pool_quantiles, pool)[inverse].reshape(image.shape))
    return torch.from_numpy(np.stack(out)).to(source.dtype)
