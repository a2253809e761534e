"""What edits a denoiser's estimate, as wrappers around a bound denoiser ``(x, t) -> x0`` that keep its schedule:

- ``bind``: the denoiser with what is given (the condition channels and class labels); with a guidance scale w
  other than 1, classifier-free guidance: x0 = x0_null + w (x0_class - x0_null), both from one network call on the
  doubled batch (w = 1 is the plain conditional model, w = 0 ignores the class);
- ``Clipped``: the estimate clipped to the data range [-1, 1] (DDPM's ``clip_sample``). Near t = 1 alpha is ~0.006
  and an error of 0.01 in the noise would move x0 by ~1.5; without the clip an imperfect network can push a
  few-step sampler out of the data range for good;
- ``Projected``: ``fn(x0, t)`` applied to every estimate: the tasks' projections onto their measurements (data
  consistency in the style of DDNM, Wang et al. 2023), so every sampler gets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .denoiser import Conditioning, Denoiser

Tensor = torch.Tensor
Projection = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Bound:
    """A denoiser with what is given; ``network``: what runs the model (compiled, or a CUDA graph)."""

    denoiser: Denoiser
    conditioning: Conditioning
    network: Callable | None = None

    @property
    def schedule(self):
        return self.denoiser.schedule

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.denoiser(x, t, self.conditioning, self.network)


@dataclass
class Guided(Bound):
    """Classifier-free guidance with scale ``scale`` towards ``conditioning.labels``."""

    scale: float = 1.0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        c = self.conditioning
        null = torch.full_like(c.labels, self.denoiser.model.null_class)
        both = Conditioning(torch.cat([c.condition, c.condition]), torch.cat([c.given, c.given]),
                            torch.cat([c.labels, null]))
        with_class, without = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), both, self.network).chunk(2)
        return without + self.scale * (with_class - without)  # x0 is affine in the network output: same mix


def bind(denoiser: Denoiser, conditioning: Conditioning, guidance: float = 1.0, network: Callable | None = None):
    """The denoiser the samplers call: plain, or guided when there are labels, classes and a scale other than 1."""
    guided = conditioning.labels is not None and denoiser.model.schema.num_classes > 0 and guidance != 1.0
    return Guided(denoiser, conditioning, network, guidance) if guided else Bound(denoiser, conditioning, network)


@dataclass
class Clipped:
    inner: Callable

    @property
    def schedule(self):
        return self.inner.schedule

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.inner(x, t).clamp(-1.0, 1.0)


@dataclass
class Projected:
    inner: Callable
    fn: Projection

    @property
    def schedule(self):
        return self.inner.schedule

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.fn(self.inner(x, t), t)
