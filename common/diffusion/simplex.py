"""Simplex noise (Perlin's successor, Gustavson's 2D formulation), vectorised in torch, for AnoDDPM.

AnoDDPM (Wyatt et al. 2022) diffuses with multi-octave simplex noise instead of white noise: low-frequency noise
hides a lesion's whole extent, where white noise at the same level leaves its outline for the model to restore.
A model must be *trained* with the noise it is later asked to remove, so the trainer offers it
(``ModelSpec.noise = "simplex"``, `meddiff train --noise simplex`) and the ancestral sampler can draw it. Each (image, channel) field gets its
own gradient permutation and offset and is standardised to zero mean and unit variance, so it stands in for the
N(0, I) draw everywhere the objective uses one. 2D only (3D models keep Gaussian noise).
"""

from __future__ import annotations

import math

import torch

from .names import NOISES

Tensor = torch.Tensor
_F2 = 0.5 * (math.sqrt(3.0) - 1.0)
_G2 = (3.0 - math.sqrt(3.0)) / 6.0
_GRADIENTS = torch.tensor([[1, 1], [-1, 1], [1, -1], [-1, -1], [1, 0], [-1, 0], [0, 1], [0, -1]],
                          dtype=torch.float64)


def _corner(perm: Tensor, i: Tensor, j: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """One simplex corner's contribution: (0.5 - r^2)^4 (g . d), with g from the field's permutation."""
    index = perm.gather(1, i + perm.gather(1, j)) % len(_GRADIENTS)
    g = _GRADIENTS[index]
    falloff = (0.5 - x * x - y * y).clamp_min(0.0)
    return falloff**4 * (g[..., 0] * x + g[..., 1] * y)


def simplex2d(x: Tensor, y: Tensor, perm: Tensor) -> Tensor:
    """Simplex noise at points (x, y): (F, P) float64 each; perm: (F, 512) a doubled permutation of 0..255."""
    skew = (x + y) * _F2
    i, j = torch.floor(x + skew), torch.floor(y + skew)
    unskew = (i + j) * _G2
    x0, y0 = x - (i - unskew), y - (j - unskew)
    i1 = (x0 > y0).to(x.dtype)
    j1 = 1.0 - i1
    x1, y1 = x0 - i1 + _G2, y0 - j1 + _G2
    x2, y2 = x0 - 1.0 + 2.0 * _G2, y0 - 1.0 + 2.0 * _G2
    ii, jj = i.long() & 255, j.long() & 255
    total = (_corner(perm, ii, jj, x0, y0) + _corner(perm, ii + i1.long(), jj + j1.long(), x1, y1)
             + _corner(perm, ii + 1, jj + 1, x2, y2))
    return 70.0 * total


def simplex_noise(shape: tuple[int, ...], generator: torch.Generator | None = None, *, octaves: int = 6,
                  persistence: float = 0.8, base_period: float = 0.25, dtype=torch.float32) -> Tensor:
    """(B, C, H, W) multi-octave simplex noise, each field standardised (AnoDDPM's 6 octaves, persistence 0.8).

    base_period: the coarsest octave's period as a fraction of the image width (AnoDDPM: 64 px of 256)."""
    if len(shape) != 4:
        raise ValueError(f"simplex noise is 2D: expected a (B, C, H, W) shape, got {tuple(shape)}")
    batch, channels, height, width = shape
    fields = batch * channels
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                                indexing="ij")
    rows, cols = rows.reshape(1, -1), cols.reshape(1, -1)
    total = torch.zeros((fields, height * width), dtype=torch.float64)
    for octave in range(octaves):
        perm = torch.stack([torch.randperm(256, generator=generator) for _ in range(fields)])
        perm = torch.cat([perm, perm], dim=1)
        offset = torch.rand((fields, 2), generator=generator, dtype=torch.float64) * 256.0
        scale = 2.0**octave / (base_period * width)
        total += persistence**octave * simplex2d(cols * scale + offset[:, :1], rows * scale + offset[:, 1:], perm)
    total = (total - total.mean(1, keepdim=True)) / total.std(1, keepdim=True).clamp_min(1e-12)
    return total.reshape(shape).to(dtype)


def draw_noise(kind: str, shape: tuple[int, ...], generator: torch.Generator | None = None,
               dtype=torch.float32) -> Tensor:
    """The diffusion noise of a model: N(0, I), or standardised simplex noise (2D only)."""
    if kind == "gaussian":
        device = generator.device if generator is not None else None
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if kind == "simplex":
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("simplex noise is drawn on the CPU: pass a CPU generator")
        return simplex_noise(shape, generator, dtype=dtype)
    raise ValueError(f"noise must be one of {NOISES}, got {kind!r}")
