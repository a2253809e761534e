"""Super-resolution (and joint denoising + super-resolution) by posterior sampling with data consistency.

The measurement is y = A x (+ noise) with A = average pooling by the factor (what a lower-resolution acquisition
of the same field of view integrates). Its pseudo-inverse A+ is nearest-neighbour upsampling (A A+ = I), so
x0 + A+(y - A x0) is the closest image to x0 that reproduces y exactly. That projection is applied to the
denoised estimate at every sampler step (DDNM, Wang et al. 2023) and once more to the output, so downsampling
the result gives back the input to float precision. With a noisy y (joint denoise + SR, as in R2D2+) the
projection is relaxed to x0 + lambda_t A+(y - A x0), lambda_t = sigma_t^2 / (sigma_t^2 + s^2) (DDNM+), and the
output is not forced onto the noisy measurement. ``samples`` > 1 averages posterior samples: each draw fits y,
so the mean does too, and it approaches the posterior mean (the PSNR-optimal estimate; one draw carries
plausible but invented texture, which costs PSNR).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..common.diffusion.generate import Conditioning, sample
from ..common.diffusion.loading import LoadedModel
from .figures import first_image_channel
from .metrics import image_quality, to_unit
from .result import TaskResult, Table
from .task_data import image_availability
from .settings import FACTORS, SR_SAMPLERS, SuperResolveSettings  # noqa: F401 (re-exported)

Tensor = torch.Tensor
OUTPUT = "super_resolve"  # the file stem of the outputs: <out>/super_resolve.npz, .json, .png


def downsample(x: Tensor, factor: int) -> Tensor:
    """A: average pooling by ``factor`` over the spatial axes of (N, C, *spatial)."""
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    return pool(x, factor)


def upsample_pinv(y: Tensor, factor: int) -> Tensor:
    """A+: nearest-neighbour upsampling, the pseudo-inverse of average pooling (A A+ = I)."""
    return F.interpolate(y, scale_factor=factor, mode="nearest")


def project(x0: Tensor, y: Tensor, factor: int, weight: float | Tensor = 1.0) -> Tensor:
    """x0 moved (all the way for weight 1) onto the set of images whose downsampling is y."""
    return x0 + weight * upsample_pinv(y - downsample(x0, factor), factor)


def bicubic(y: Tensor, factor: int) -> Tensor:
    """The classical baseline: bicubic interpolation (2D), trilinear (3D)."""
    mode = "bicubic" if y.dim() == 4 else "trilinear"
    return F.interpolate(y, scale_factor=factor, mode=mode, align_corners=False)


def check_input_size(low: Tensor, factor: int, shape: tuple[int, ...]) -> None:
    """The low-resolution input must be the model's grid ``shape`` divided by the factor."""
    expected = tuple(n // factor for n in shape)
    if any(n % factor for n in shape) or tuple(low.shape[2:]) != expected:
        raise ValueError(f"x{factor} super-resolution on this {' x '.join(map(str, shape))} px checkpoint needs "
                         f"{' x '.join(map(str, expected))} px inputs, got {tuple(low.shape[2:])}; give --factor "
                         f"{shape[-1] // max(low.shape[-1], 1)} or resample the input")


def _start(loaded: LoadedModel, y: Tensor, settings: SuperResolveSettings, generator) -> Tensor | None:
    """None (pure prior noise) at start_t = 1; else the bicubic image (a latent model: its latents) diffused to
    start_t."""
    if settings.start_t >= 1.0:
        return None
    t = torch.tensor(settings.start_t, dtype=torch.float64)
    guess = bicubic(y, settings.factor)
    guess = guess if loaded.codec is None else loaded.codec.encode(guess).to(guess.device)
    noise = torch.randn(guess.shape, generator=generator, device=guess.device)
    return float(loaded.schedule.alpha(t)) * guess + float(loaded.schedule.sigma(t)) * noise


def super_resolve(loaded: LoadedModel, low: Tensor, settings: SuperResolveSettings = SuperResolveSettings(),
                  seed: int = 0) -> Tensor:
    """(N, C, *spatial * factor) in model units from low-resolution (N, C, *spatial) in model units."""
    check_input_size(low, settings.factor, loaded.spatial_shape)
    generator = torch.Generator(loaded.device).manual_seed(seed)
    schedule, factor, s2 = loaded.schedule, settings.factor, settings.noise_level**2
    out = []
    for first in range(0, low.shape[0], settings.batch_size):
        y = low[first:first + settings.batch_size].to(loaded.device)

        def consistent(x0: Tensor, t: Tensor, y: Tensor = y) -> Tensor:
            if s2 == 0:
                return project(x0, y, factor)
            sigma2 = schedule.sigma(t).to(x0.dtype) ** 2
            weight = (sigma2 / (sigma2 + s2)).reshape((-1,) + (1,) * (x0.dim() - 1))
            return project(x0, y, factor, weight)

        shape = (y.shape[0], y.shape[1], *(n * factor for n in y.shape[2:]))
        codec, decoded = loaded.codec, (lambda x: x)
        if codec is not None:  # decode, move onto the measurements, encode again (as reconstruct.py does)
            shape = (shape[0], shape[1] * codec.latent_channels, *(codec.latent_size(n) for n in shape[2:]))
            consistent = (lambda z0, t, pixel=consistent: codec.encode(pixel(codec.decode(z0), t)).to(z0.dtype))
            decoded = codec.decode
        nothing = torch.zeros(shape[:2], dtype=torch.bool, device=loaded.device)
        draws = [decoded(sample(loaded.denoiser, Conditioning(torch.zeros(shape, device=loaded.device), nothing),
                                sampler=settings.sampler, steps=settings.steps, generator=generator,
                                project=consistent, x_start=_start(loaded, y, settings, generator),
                                start_t=settings.start_t, clip_denoised=codec is None,
                                **({"eta": settings.eta} if settings.sampler == "ddim" else {})))
                 for _ in range(settings.samples)]
        x = torch.stack(draws).mean(0)  # each draw satisfies A x = y, so their mean does too (pixel models)
        out.append((project(x, y, factor) if s2 == 0 else x).cpu())
    return torch.cat(out)


def super_resolve_task(loaded: LoadedModel, data, settings: SuperResolveSettings, simulate: bool = False,
                       noise_level: float = 0.0, seed: int = 0) -> TaskResult:
    """Super-resolve a site's images next to bicubic interpolation. With ``simulate``, ``data`` is at the
    model's resolution: it is average-pooled (plus noise of ``noise_level`` in [0, 1] units), super-resolved and
    scored against itself; otherwise ``data`` is the low-resolution input."""
    have = image_availability(data, loaded.schema)
    low = downsample(data.images, settings.factor) if simulate else data.images
    if simulate and noise_level > 0:
        noise = torch.randn(low.shape, generator=torch.Generator().manual_seed(seed))
        low = low + 2 * noise_level * noise * have.reshape(have.shape + (1,) * (low.dim() - 2))
    start = time.perf_counter()
    high = super_resolve(loaded, low, settings, seed=seed)
    seconds, baseline = time.perf_counter() - start, bicubic(low, settings.factor)
    consistency = float((downsample(high, settings.factor) - low).abs().amax())
    report = {"task": "super-resolution", "data": data.source, "examples": len(data), "settings": vars(settings),
              "simulated": simulate, "seconds": seconds, "device": str(loaded.device),
              "data_consistency_max_abs_error": consistency, "metrics": {}}
    table = None
    if simulate:
        reference = to_unit(data.images)
        for name, images in (("bicubic", baseline), ("diffusion", high)):
            report["metrics"][name] = image_quality(to_unit(images), reference, have)
        report["psnr_gain_over_bicubic_db"] = report["metrics"]["diffusion"]["psnr"] - \
            report["metrics"]["bicubic"]["psnr"]
        table = Table(f"super-resolution x{settings.factor} on {len(data)} images, [0, 1] units",
                      ("method", "PSNR (dB)", "SSIM"), [(n, m["psnr"], m["ssim"]) for n, m in report["metrics"].items()])
    columns = {"input (nearest)": to_unit(first_image_channel(upsample_pinv(low, settings.factor), have)),
               "bicubic": to_unit(first_image_channel(baseline, have)),
               "diffusion": to_unit(first_image_channel(high, have))}
    if simulate:
        columns["reference"] = to_unit(first_image_channel(data.images, have))
    return TaskResult(OUTPUT, {"high": high, "low": low, "bicubic": baseline}, report, columns, table,
                      f"data consistency: max |A(output) - input| = {consistency:.2e}; {seconds:.1f} s")
