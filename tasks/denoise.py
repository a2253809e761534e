"""Denoising: enter the reverse diffusion at the time whose noise matches the image's, and run it to 0.

A noisy image y = x + n with n ~ N(0, s^2) in model units is, scaled by alpha(t), exactly a diffused sample
alpha(t) x + sigma(t) n' when sigma(t) / alpha(t) = s: so alpha(t) y is a valid x_t and any sampler can take it
from t to 0 (Kawar et al. 2022; the "denoising" row of DESIGN.md). The noise level is estimated from the image
(wavelet median absolute deviation, scikit-image) unless given. Rician and Poisson noise are treated as
Gaussian of the estimated level; Rician magnitudes are first bias-corrected (sqrt(max(y^2 - 2 s^2, 0))).
DDIM is deterministic; the ancestral sampler can average K samples (the posterior mean, smoother, higher PSNR).

A latent model (common/latent/) denoises the image's latents the same way, entering at the time whose noise
matches the noise the encoder passes on: the std of E(y + n') - E(y) for a fresh draw n' of the image's level
(the encoder is near-linear at this scale), then decodes: SDEdit-style latent denoising (Meng et al., ICLR 2022)
with the entry time measured instead of guessed.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, estimate_sigma

from ..common.diffusion.generate import Conditioning, sample
from ..common.diffusion.loading import LoadedModel
from .figures import first_image_channel
from .metrics import from_unit, image_quality, to_unit
from .noise import add_noise
from .result import TaskResult, Table
from .task_data import image_availability
from .settings import DENOISE_SAMPLERS, DenoiseSettings  # noqa: F401 (re-exported)

Tensor = torch.Tensor
OUTPUT = "denoise"  # the file stem of the outputs: <out>/denoise.npz, .json, .png


def estimate_level(noisy_unit: Tensor, channels: Tensor) -> Tensor:
    """(N,) noise std in [0, 1] units: the mean over each image's available channels of scikit-image's
    wavelet-MAD estimate. noisy_unit: (N, C, H, W); channels: (N, C) bool."""
    levels = []
    for image, have in zip(noisy_unit.numpy(), channels.numpy()):
        values = [estimate_sigma(image[c].astype(np.float64)) for c in np.flatnonzero(have)]
        levels.append(float(np.mean(values)) if values else 0.0)
    return torch.tensor(levels, dtype=torch.float32)


def _prepare(noisy_unit: Tensor, level: Tensor, noise_model: str) -> Tensor:
    if noise_model != "rician":
        return noisy_unit
    s = level.reshape((-1,) + (1,) * (noisy_unit.dim() - 1))
    return torch.sqrt((noisy_unit**2 - 2 * s**2).clamp_min(0.0))


def denoise(loaded: LoadedModel, noisy_unit: Tensor, available: Tensor, settings: DenoiseSettings = DenoiseSettings(),
            seed: int = 0) -> dict:
    """{"denoised": (N, C, ...) in [0, 1], "level": (N,) noise std used, "start_t": (N,) entry times}."""
    level = (estimate_level(noisy_unit, available) if settings.level is None
             else torch.full((noisy_unit.shape[0],), settings.level))
    if bool((level <= 0).any()):
        raise ValueError("an image has no measurable noise (estimated level 0); give --level")
    y = from_unit(_prepare(noisy_unit, level, settings.noise_model))
    generator = torch.Generator(loaded.device).manual_seed(seed)
    out, times = [], []
    for i in range(noisy_unit.shape[0]):  # each image enters at its own time
        x = y[i:i + 1].to(loaded.device)
        ratio = 2.0 * float(level[i])  # x2: [0, 1] units -> model units
        if loaded.codec is not None:
            x, ratio = latent_noise(loaded.codec, x, ratio, seed + i)
        t = loaded.schedule.time_for_noise_ratio(ratio)
        times.append(t)
        alpha = float(loaded.schedule.alpha(torch.tensor(t, dtype=torch.float64)))
        nothing = torch.zeros(x.shape[:2], dtype=torch.bool, device=loaded.device)
        runs = [sample(loaded.denoiser, Conditioning(x, nothing), sampler=settings.sampler,
                       steps=settings.steps, generator=generator, x_start=alpha * x, start_t=t,
                       clip_denoised=loaded.codec is None)
                for _ in range(settings.samples if settings.sampler == "ddpm" else 1)]
        if loaded.codec is not None:
            runs = [loaded.codec.decode(z) for z in runs]
        runs = [r.cpu() for r in runs]
        out.append(to_unit(torch.stack(runs).mean(0)))
    return {"denoised": torch.cat(out), "level": level, "start_t": torch.tensor(times)}


def latent_noise(codec, noisy: Tensor, ratio: float, seed: int) -> tuple[Tensor, float]:
    """(the latents of ``noisy``, the noise-to-signal ratio they carry): the spread of E(y + n') - E(y) for a
    fresh draw n' of the image's noise std ``ratio`` (model units)."""
    latents = codec.encode(noisy)
    draw = torch.randn(noisy.shape, generator=torch.Generator().manual_seed(seed)).to(noisy) * ratio
    return latents, float((codec.encode(noisy + draw) - latents).std())


def classical_baselines(noisy_unit: Tensor, available: Tensor, level: Tensor) -> dict[str, Tensor]:
    """Non-local means and total variation (scikit-image), each given the same noise level per image.

    NLM: h = 0.8 sigma, 5x5 patches within 13x13 (scikit-image's recommended fast mode); TV: Chambolle with
    weight = sigma. Both are classic settings for Gaussian noise; neither is tuned on the test images."""
    nlm, tv = noisy_unit.clone(), noisy_unit.clone()
    for i, (image, have) in enumerate(zip(noisy_unit.numpy().astype(np.float64), available.numpy())):
        s = float(level[i])
        for c in np.flatnonzero(have):
            nlm[i, c] = torch.from_numpy(denoise_nl_means(image[c], h=0.8 * s, sigma=s, patch_size=5,
                                                          patch_distance=6, fast_mode=True))
            tv[i, c] = torch.from_numpy(denoise_tv_chambolle(image[c], weight=s))
    return {"non-local means": nlm.clamp(0, 1), "total variation": tv.clamp(0, 1)}


def denoise_task(loaded: LoadedModel, data, settings: DenoiseSettings, simulate: float | None = None,
                 baselines: bool = True, seed: int = 0) -> TaskResult:
    """Denoise a site's images (or, with ``simulate``, clean images with added noise of that level, scored
    against them) next to non-local means and TV. data: tasks/task_data.py TaskData."""
    if simulate is not None and simulate <= 0:
        raise ValueError(f"--simulate must be > 0, got {simulate}")
    have = image_availability(data, loaded.schema)
    clean = to_unit(data.images)
    noisy = clean
    if simulate is not None:
        mask = have.reshape(have.shape + (1,) * (clean.dim() - 2))
        noisy = torch.where(mask, add_noise(clean, settings.noise_model, simulate, torch.Generator().manual_seed(seed)),
                            clean)
    start = time.perf_counter()
    result = denoise(loaded, noisy, have, settings, seed=seed)
    seconds = time.perf_counter() - start
    outputs = {"diffusion": result["denoised"], **(classical_baselines(noisy, have, result["level"]) if baselines
                                                    else {})}
    report = {"task": "denoising", "data": data.source, "examples": len(data), "settings": vars(settings),
              "simulated_level": simulate, "seconds": seconds, "device": str(loaded.device),
              "estimated_level_mean": float(result["level"].mean()),
              "entry_time_mean": float(result["start_t"].mean()), "metrics": {}}
    table = _score(report, noisy, clean, have, outputs, settings, simulate) if simulate is not None else None
    columns = {"clean" if simulate is not None else "input": first_image_channel(clean, have)}
    if simulate is not None:
        columns["noisy"] = first_image_channel(noisy, have)
    columns.update({name: first_image_channel(images, have) for name, images in outputs.items()})
    arrays = {**{k.replace(" ", "_"): v for k, v in outputs.items()}, "noisy": noisy, "level": result["level"]}
    return TaskResult(OUTPUT, arrays, report, columns, table,
                      f"estimated noise level {report['estimated_level_mean']:.4f}; {seconds:.1f} s")


def _score(report: dict, noisy, clean, have, outputs: dict, settings: DenoiseSettings, level: float) -> Table:
    """PSNR/SSIM of the input and every output against the clean images, and the gains, into ``report``."""
    metrics = report["metrics"]
    for name, images in {"noisy input": noisy, **outputs}.items():
        metrics[name] = image_quality(images, clean, have)
    best = max((n for n in outputs if n != "diffusion"), key=lambda n: metrics[n]["psnr"], default=None)
    if best:
        report["psnr_gain_over_best_baseline_db"] = metrics["diffusion"]["psnr"] - metrics[best]["psnr"]
    report["psnr_gain_over_input_db"] = metrics["diffusion"]["psnr"] - metrics["noisy input"]["psnr"]
    rows = [(name, m["psnr"], m["ssim"]) for name, m in metrics.items()]
    return Table(f"denoising ({settings.noise_model}, level {level}) on {len(clean)} images, [0, 1] units",
                 ("method", "PSNR (dB)", "SSIM"), rows)
