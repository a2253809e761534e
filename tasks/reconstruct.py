"""Undersampled single-coil Cartesian MRI reconstruction by posterior sampling on the global model's prior.

Forward model: y = M F (p * x), with F the centred orthonormal 2D FFT, M the sampled phase-encode lines
(columns; every readout row fully sampled) and p = exp(i phi) a smooth phase map. Simulated k-space from a
magnitude image has phi = 0; for measured complex k-space phi is estimated from the fully sampled centre
(the low-resolution image it gives), the usual phase-constrained assumption. The prior is the model's, on the
real image x in [0, 1] units.

Data consistency (score-MRI / DDNM): at every network evaluation of the sampler (predictor and corrector steps
alike) the denoised estimate x0 is replaced, on the measured lines, by the measurement:
x0 <- Re(conj(p) F^H (M y + (1 - M) F(p x0))). The output gets the same replacement once more, in complex form,
so its k-space equals y on every sampled line (to float precision). Samples can be averaged
(towards the posterior mean, as in super_resolve.py).

Baselines: the zero-filled inverse FFT, and total-variation compressed sensing (FISTA on
0.5 ||M F(p x) - y||^2 + lam TV(x), the TV proximal step by Chambolle's algorithm from scikit-image).

Supported: single-coil 2D Cartesian k-space, one image channel reconstructed per call, any other channels of
the model given fully sampled as conditions (multi-contrast) or left to the prior. Not supported: multi-coil
data with sensitivity maps, non-Cartesian trajectories, 3D k-space.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..common.diffusion.generate import Conditioning, sample
from ..common.diffusion.loading import LoadedModel
from .settings import MASK_KINDS, RECONSTRUCT_SAMPLERS, ReconstructSettings  # noqa: F401 (re-exported)

Tensor = torch.Tensor


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2D FFT over the last two axes."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft2c(k: Tensor) -> Tensor:
    """Centred orthonormal inverse 2D FFT over the last two axes."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def cartesian_mask(width: int, acceleration: int, center_fraction: float | None = None, kind: str = "random",
                   seed: int = 0) -> Tensor:
    """(width,) bool: the sampled phase-encode columns. A fully sampled centre (fastMRI defaults: 8 % of the
    lines at x4, 4 % at x8) plus, outside it, random or equispaced lines to reach width / acceleration in all."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if center_fraction is None:
        center_fraction = 0.32 / acceleration
    centre = max(2, int(round(width * center_fraction)))
    mask = torch.zeros(width, dtype=torch.bool)
    start = (width - centre + 1) // 2
    mask[start:start + centre] = True
    wanted = max(centre, int(round(width / acceleration)))
    outside = torch.nonzero(~mask).flatten()
    extra = wanted - centre
    if extra > 0:
        if kind == "random":
            order = torch.randperm(len(outside), generator=torch.Generator().manual_seed(seed))
            chosen = outside[order[:extra]]
        else:
            chosen = outside[torch.linspace(0, len(outside) - 1, extra).round().long()]
        mask[chosen] = True
    return mask


def expand_mask(mask: Tensor, shape: tuple[int, int]) -> Tensor:
    """(H, W) bool from a (W,) column mask or an (H, W) mask, with a clear error when it does not fit."""
    height, width = shape
    if mask.dim() == 1:
        if mask.shape[0] != width:
            raise ValueError(f"the mask has {mask.shape[0]} columns but the k-space is {height} x {width}; give a "
                             f"mask of {width} columns (or {height} x {width})")
        return mask.bool().reshape(1, width).expand(height, width)
    if tuple(mask.shape[-2:]) != (height, width):
        raise ValueError(f"the mask is {tuple(mask.shape[-2:])} but the k-space is {height} x {width}; they must "
                         "match")
    return mask.bool()


def centre_crop_kspace(kspace: Tensor, mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The central size x size k-space (the image low-passed to the model's resolution), rescaled so the
    orthonormal inverse FFT keeps intensities; the mask cropped the same way."""
    height, width = kspace.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"k-space of {height} x {width} is smaller than the model's {size} px; reconstruct with a "
                         f"model trained at <= {min(height, width)} px")
    top, left = (height - size + 1) // 2, (width - size + 1) // 2
    scale = math.sqrt(size * size / (height * width))
    return (kspace[..., top:top + size, left:left + size] * scale,
            mask[..., top:top + size, left:left + size])


def estimate_phase(kspace: Tensor, columns: Tensor) -> Tensor:
    """exp(i phi) of the low-resolution image from the fully sampled centre (the contiguous run of sampled
    columns around the middle). kspace: (N, H, W) complex; columns: (W,) bool. For measured complex data."""
    middle = columns.shape[0] // 2
    left, right = middle, middle
    while left > 0 and columns[left - 1]:
        left -= 1
    while right < columns.shape[0] and columns[right]:
        right += 1
    centre = torch.zeros_like(columns)
    centre[left:right] = True
    return torch.exp(1j * torch.angle(ifft2c(kspace * centre)))


def data_consistent(x: Tensor, kspace: Tensor, mask: Tensor, phase: Tensor) -> Tensor:
    """Complex image whose k-space is the measurement on the sampled lines and F(phase * x) elsewhere.
    x: (N, H, W) real; kspace, phase: (N, H, W) complex; mask: (H, W) or (N, H, W) bool."""
    estimate = fft2c(phase * x.to(kspace.dtype))
    return ifft2c(torch.where(mask, kspace, estimate))


def zero_filled(kspace: Tensor, mask: Tensor) -> Tensor:
    """|F^H (M y)|: the classical baseline. (N, H, W) real."""
    return ifft2c(kspace * mask).abs()


def tv_reconstruction(kspace: Tensor, mask: Tensor, phase: Tensor, weight: float = 0.002,
                      iterations: int = 60) -> Tensor:
    """TV compressed sensing by FISTA (step 1: F is orthonormal, so the data term's Lipschitz constant is 1).
    Returns (N, H, W) real images."""
    from skimage.restoration import denoise_tv_chambolle

    x = (ifft2c(kspace * mask) * phase.conj()).real
    z, momentum = x.clone(), 1.0
    for _ in range(iterations):
        residual = mask * (fft2c(phase * z.to(kspace.dtype)) - kspace)
        gradient = (ifft2c(residual) * phase.conj()).real
        step = (z - gradient).numpy()
        following = torch.from_numpy(np.stack([denoise_tv_chambolle(s, weight=weight) for s in step])).to(x.dtype)
        next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
        z = following + (momentum - 1) / next_momentum * (following - x)
        x, momentum = following, next_momentum
    return x


def reconstruct(loaded: LoadedModel, kspace: Tensor, mask: Tensor, channel: int, *, phase: Tensor | None = None,
                condition: Tensor | None = None, given: Tensor | None = None,
                settings: ReconstructSettings = ReconstructSettings(), seed: int = 0) -> Tensor:
    """Complex (N, H, W) reconstructions of schema channel ``channel`` in [0, 1] units (magnitude = the image).

    kspace: (N, H, W) complex at the model's resolution, in [0, 1] image units; mask: (H, W) or (N, H, W) bool;
    phase: (N, H, W) exp(i phi) (default 1); condition: (N, C, H, W) model units with ``given`` (N, C) bool for
    fully sampled other contrasts. Each result's k-space equals ``kspace`` on the sampled lines."""
    n, height, width = kspace.shape
    if (height, width) != (loaded.resolution,) * 2:
        raise ValueError(f"k-space of {height} x {width} does not match the model's {loaded.resolution} px; crop it "
                         "with centre_crop_kspace")
    mask = expand_mask(mask, (height, width))
    phase = torch.ones_like(kspace) if phase is None else phase
    c = loaded.schema.num_channels
    if condition is None:
        condition = torch.zeros(n, c, height, width)
        given = torch.zeros(n, c, dtype=torch.bool)
    if given[:, channel].any():
        raise ValueError("the channel being reconstructed cannot also be given as a condition")
    generator = torch.Generator(loaded.device).manual_seed(seed)
    device = loaded.device
    out = []
    for first in range(0, n, settings.batch_size):
        rows = slice(first, first + settings.batch_size)
        y, p = kspace[rows].to(device), phase[rows].to(device)
        m = (mask[rows] if mask.dim() == 3 else mask).to(device)

        def fix(image: Tensor) -> Tensor:
            """(B, H, W) model units with the measured k-space lines put back."""
            unit = (image + 1) / 2
            return 2 * (data_consistent(unit, y, m, p) * p.conj()).real.to(image.dtype) - 1

        conditioning, consistent, channel_of = _consistency(loaded, condition[rows], given[rows], channel, fix)
        draws = [channel_of(sample(loaded.denoiser, conditioning, sampler=settings.sampler, steps=settings.steps,
                                   generator=generator, project=consistent, clip_denoised=loaded.codec is None,
                                   **({"eta": settings.eta} if settings.sampler == "ddim" else {})))
                 for _ in range(settings.samples)]
        mean = (torch.stack(draws).mean(0) + 1) / 2  # the mean of consistent draws is consistent
        out.append(data_consistent(mean, y, m, p).cpu())
    return torch.cat(out)


def _consistency(loaded: LoadedModel, condition: Tensor, given: Tensor, channel: int, fix):
    """(conditioning, projection of every x0 estimate, the channel's image of a draw in model units).

    A pixel model's estimate of ``channel`` is made consistent in place. A latent model's estimate is decoded, made
    consistent in pixels and encoded again: the pixel-space variant of ReSample's hard data consistency (Song et
    al., ICLR 2024), so the latent is pulled onto the measurements at every step. The decoded result is made
    consistent once more by the caller, so the measured lines hold exactly."""
    device, codec = loaded.device, loaded.codec
    if codec is None:
        def consistent(x0: Tensor, t: Tensor) -> Tensor:
            x0 = x0.clone()
            x0[:, channel] = fix(x0[:, channel])
            return x0

        return Conditioning(condition.to(device), given.to(device)), consistent, lambda x: x[:, channel]
    part = codec.rows(channel)

    def consistent_latent(z0: Tensor, t: Tensor) -> Tensor:
        z0 = z0.clone()
        z0[:, part] = codec.encode(fix(codec.decode(z0[:, part])[:, 0])[:, None]).to(z0.dtype)
        return z0

    conditioning = Conditioning(codec.encode(condition, given).to(device), codec.latent_available(given).to(device))
    return conditioning, consistent_latent, lambda z: codec.decode(z[:, part])[:, 0]


def nmse(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) ||pred - target||^2 / ||target||^2 per image (fastMRI's NMSE)."""
    return (pred - target).flatten(1).pow(2).sum(1) / target.flatten(1).pow(2).sum(1).clamp_min(1e-12)
