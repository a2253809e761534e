"""Anomaly detection: reconstruct a healthy version of each image and score where it differs.

Two routes over the same model:
- AnoDDPM (Wyatt et al. 2022): noise the image partially, to depth t*, and run the reverse process from there.
  Noise at t* drowns a lesion but not the anatomy around it, so the reconstruction fills in healthy tissue.
  A class-conditional model is steered to the healthy class; an unconditional one (e.g. trained on tumour-free
  slices only) needs no label. The noise is the one the model was trained with: Gaussian, or simplex for a
  model trained with ``meddiff train --noise simplex`` (AnoDDPM's variant: it hides a lesion's whole extent).
- Counterfactual (Sanchez et al. 2022): DDIM-encode the image deterministically to depth L without a class,
  then decode with classifier-free guidance towards the healthy class. Needs a class-conditional model.

The anomaly map is the per-pixel absolute difference, averaged over the image channels each example has and
over ``repeats`` reconstructions, then smoothed with a 3x3 mean filter (single-pixel reconstruction noise is not
a lesion; on the phantom this lifts image AUROC from 0.93 to 0.96); the image score is the mean of the map's top
1 % of pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import torch
import torch.nn.functional as F

from ..common.diffusion.generate import Conditioning, sample
from ..common.diffusion.guidance import bind
from ..common.diffusion.loading import LoadedModel
from ..common.diffusion.samplers import ddim_invert
from ..common.diffusion.simplex import draw_noise
from .figures import first_image_channel
from .metrics import detection_scores, pixel_scores, to_unit
from .result import TaskResult, Table
from .settings_checks import check_sampling
from .task_data import TaskData, image_availability, image_channel_weights

Tensor = torch.Tensor
OUTPUT = "anomalies"  # the file stem of the outputs: <out>/anomalies.npz, .json, .png
METHODS = ("anoddpm", "counterfactual")


@dataclass(frozen=True)
class AnomalySettings:
    method: str = "anoddpm"
    depth: float = 0.5  # t*: the fraction of the diffusion the image is noised to (AnoDDPM) or encoded to
    steps: int = 30  # sampler steps from the depth down to 0
    guidance: float = 3.0  # counterfactual: classifier-free guidance towards the healthy class
    healthy_class: str = "healthy"
    repeats: int = 1  # AnoDDPM: reconstructions averaged per image (each with fresh noise)
    top_fraction: float = 0.01  # image score: mean of the map's highest pixels
    smoothing: int = 3  # mean filter width for the map (1 = none)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"anomaly method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.depth <= 1.0:
            raise ValueError(f"depth must be in (0, 1], got {self.depth}")
        check_sampling("anomaly detection", None, (), steps=self.steps, repeats=self.repeats,
                       batch_size=self.batch_size)
        if self.smoothing < 1 or self.smoothing % 2 == 0:
            raise ValueError(f"smoothing must be an odd width >= 1, got {self.smoothing}")


def model_noise(loaded: LoadedModel) -> str:
    """The diffusion noise the checkpoint was trained with (gaussian unless trained with --noise simplex)."""
    return loaded.spec.noise


def healthy_label(loaded: LoadedModel, settings: AnomalySettings) -> int | None:
    """The class index reconstructions are steered to; None for a model without classes (AnoDDPM only)."""
    names = loaded.schema.class_names
    if not names:
        if settings.method == "counterfactual":
            raise ValueError("the counterfactual method needs a class-conditional checkpoint (with a healthy class); "
                             "this one has no classes: use --method anoddpm")
        return None
    if settings.healthy_class not in names:
        raise ValueError(f"--healthy-class {settings.healthy_class!r} is not one of the checkpoint's classes "
                         f"{list(names)}")
    return names.index(settings.healthy_class)


def _reconstruct(loaded: LoadedModel, images: Tensor, label: int | None, settings: AnomalySettings,
                 generator: torch.Generator) -> Tensor:
    denoiser, device = loaded.denoiser, loaded.device
    images = images.to(device)
    nothing = torch.zeros(images.shape[:2], dtype=torch.bool, device=device)
    labels = None if label is None else torch.full((images.shape[0],), label, dtype=torch.long, device=device)
    if settings.method == "anoddpm":
        t = torch.full((images.shape[0],), settings.depth, dtype=torch.float64)
        alpha, sigma = denoiser.coefficients(t, images)
        kind = model_noise(loaded)
        cpu = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=device)))

        def fresh(x: Tensor) -> Tensor:  # the noise the model was trained with, on the model's device
            return draw_noise(kind, tuple(x.shape), cpu, x.dtype).to(device)

        return sample(denoiser, Conditioning(images, nothing, labels), sampler="ddpm", steps=settings.steps,
                      generator=generator, x_start=alpha * images + sigma * fresh(images), start_t=settings.depth,
                      noise_fn=fresh)
    with torch.no_grad():
        encoder = bind(denoiser, Conditioning(images, nothing, None))
        latent = ddim_invert(encoder, images, denoiser.schedule.sampling_times(settings.steps, settings.depth))
    return sample(denoiser, Conditioning(images, nothing, labels), sampler="ddim", steps=settings.steps,
                  guidance_scale=settings.guidance, x_start=latent, start_t=settings.depth)


def _smooth(anomaly_map: Tensor, width: int) -> Tensor:
    if width == 1:
        return anomaly_map
    pool = F.avg_pool2d if anomaly_map.dim() == 4 else F.avg_pool3d
    return pool(anomaly_map, width, stride=1, padding=width // 2, count_include_pad=False)


def detect_anomalies(loaded: LoadedModel, data: TaskData, settings: AnomalySettings = AnomalySettings(),
                     seed: int = 0) -> dict[str, Tensor]:
    """{"reconstruction": (N, C, ...), "map": (N, 1, ...), "score": (N,)} on the CPU."""
    label = healthy_label(loaded, settings)
    generator = torch.Generator(loaded.device).manual_seed(seed)
    weights = image_channel_weights(data, loaded.schema)
    reconstructions, maps = [], []
    for first in range(0, len(data), settings.batch_size):
        rows = slice(first, first + settings.batch_size)
        images, w = data.images[rows], weights[rows]
        total = torch.zeros_like(images)
        repeats = settings.repeats if settings.method == "anoddpm" else 1
        for _ in range(repeats):
            total += _reconstruct(loaded, images, label, settings, generator).cpu()
        healthy = total / repeats
        difference = (images - healthy).abs() / 2 * w  # in [0, 1] intensity units
        maps.append(_smooth(difference.sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0),
                            settings.smoothing))
        reconstructions.append(healthy)
    anomaly_map = torch.cat(maps)
    flat = anomaly_map.flatten(1)
    k = max(1, int(round(settings.top_fraction * flat.shape[1])))
    return {"reconstruction": torch.cat(reconstructions), "map": anomaly_map,
            "score": flat.topk(k, dim=1).values.mean(1)}


def image_truth(data: TaskData, loaded: LoadedModel, healthy_class: str) -> np.ndarray | None:
    """Which images are anomalous: any lesion pixel in the data's masks, else a class other than healthy."""
    if data.truth is not None:
        return data.truth.flatten(1).any(1).numpy()
    names = loaded.schema.class_names
    if names and healthy_class in names and bool((data.labels >= 0).all()):
        return (data.labels != names.index(healthy_class)).numpy()
    return None


def anomaly_task(loaded: LoadedModel, data: TaskData, settings: AnomalySettings = AnomalySettings(),
                 seed: int = 0) -> TaskResult:
    """Maps and scores, scored against the data's masks (pixel level) or classes (image level) when it has them."""
    start = time.perf_counter()
    result = detect_anomalies(loaded, data, settings, seed=seed)
    seconds = time.perf_counter() - start
    truth = image_truth(data, loaded, settings.healthy_class)
    metrics: dict = {}
    if truth is not None and 0 < truth.sum() < len(truth):
        metrics.update(detection_scores(result["score"].numpy(), truth))
    if data.truth is not None and bool(data.truth.any()):
        metrics.update(pixel_scores(result["map"].numpy(), data.truth.numpy()))
    report = {"task": "anomaly detection", "data": data.source, "examples": len(data), "settings": vars(settings),
              "noise": model_noise(loaded), "seconds": seconds, "device": str(loaded.device), "metrics": metrics,
              "ground_truth": "masks" if data.truth is not None else ("classes" if truth is not None else "none")}
    have = image_availability(data, loaded.schema)
    single = torch.ones(len(data), 1, dtype=torch.bool)
    columns = {"input": to_unit(first_image_channel(data.images, have)),
               "healthy reconstruction": to_unit(first_image_channel(result["reconstruction"], have)),
               "anomaly map": first_image_channel(result["map"], single)}
    if data.truth is not None:
        columns["truth"] = first_image_channel(data.truth.float(), single)
    arrays = {"map": result["map"], "score": result["score"], "reconstruction": result["reconstruction"],
              **({"truth": data.truth} if data.truth is not None else {})}
    rows = list(metrics.items()) or [("metrics", "none: the data has no masks or classes")]
    table = Table(f"anomaly detection ({settings.method}, depth {settings.depth}) on {len(data)} images",
                  ("metric", "value"), rows + [("seconds", seconds)])
    return TaskResult(OUTPUT, arrays, report, columns, table, "maps and scores")
