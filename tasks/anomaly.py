"""Anomaly detection: reconstruct a healthy version of each image and score where it differs.

Routes over the same model (train it on healthy examples only: ``meddiff train --healthy-only``):
- AnoDDPM (Wyatt et al. 2022): noise the image partially, to depth t*, and run the reverse process from there.
  Noise at t* drowns a lesion but not the anatomy around it, so the reconstruction fills in healthy tissue.
  A class-conditional model is steered to the healthy class (classifier-free guidance ``guidance``); an
  unconditional one needs no label. The noise is
  the one the model was trained with: Gaussian, or simplex (``meddiff train --noise simplex``, AnoDDPM's variant:
  it hides a lesion's whole extent).
- Multi-depth: AnoDDPM at several depths (``depths``), each with ``repeats`` noise draws, the error maps averaged:
  shallow depths keep detail, deep ones remove large lesions.
- pDDPM (Behrendt et al. 2023): noise one patch at a time and reconstruct it from the unnoised rest of the image,
  then stitch the patches. With a model trained on whole images the rest is kept by replacement at every step
  (the known pixels noised to the step's level, as in RePaint, Lugmayr et al. 2022), so the patch is drawn from
  its healthy context, not from itself.
- Counterfactual (Sanchez et al. 2022): DDIM-encode the image deterministically to depth L without a class,
  then decode with classifier-free guidance towards the healthy class. Needs a class-conditional model.

The error is the per-pixel difference in [0, 1] units (absolute, or only where the image is brighter or darker than
its healthy version: ``residual``), averaged over the image channels each example has (or the ``channels`` chosen)
and over the reconstructions; tasks/anomaly_maps.py turns it into a map (foreground only, median and mean
filtered) and an image score (the mean of the map's top 1 % of pixels). Thresholds chosen on healthy validation
data at a stated false-positive rate: tasks/anomaly_thresholds.py.

A latent model (common/latent/) runs every route on the image's latents and decodes the healthy latents, as the
latent DDPM of Pinaya et al. (MICCAI 2022) does. The autoencoder's own reconstruction error (the detail it blurs)
is added back to the decoded healthy image, so the error map shows what the denoiser healed, not what the
autoencoder cannot represent.
"""

from __future__ import annotations

import time

import numpy as np

import torch

from ..common.diffusion.generate import Conditioning, sample
from ..common.diffusion.guidance import bind
from ..common.diffusion.loading import LoadedModel
from ..common.diffusion.samplers import ddim_invert
from ..common.diffusion.simplex import draw_noise
from .anomaly_maps import foreground, image_scores, keep_sign, postprocess
from .anomaly_thresholds import scores_at_threshold
from .figures import first_image_channel
from .metrics import detection_scores, pixel_scores, to_unit
from .result import TaskResult, Table
from .task_data import TaskData, image_availability, image_channel_weights
from .settings import METHODS, AnomalySettings  # noqa: F401 (re-exported)

Tensor = torch.Tensor
OUTPUT = "anomalies"  # the file stem of the outputs: <out>/anomalies.npz, .json, .png


def model_noise(loaded: LoadedModel) -> str:
    """The diffusion noise the checkpoint was trained with (gaussian unless trained with --noise simplex)."""
    return loaded.spec.noise


def residual_error(images: Tensor, healthy: Tensor, residual: str) -> Tensor:
    """The per-pixel error in [0, 1] units (images in [-1, 1]) of the chosen sign (settings.RESIDUALS)."""
    return keep_sign((images - healthy) / 2, residual)


def check_scored_channels(schema, channels: tuple[str, ...]) -> None:
    images = [schema.channels[i] for i in schema.image_indices]
    unknown = [c for c in channels if c not in images]
    if unknown:
        raise ValueError(f"scored channel(s) {unknown} are not image channels of the model; it has {images}")


def scored_channel_weights(data: TaskData, schema, channels: tuple[str, ...]) -> Tensor:
    """(N, C, 1, ...): the image channels each example has, kept to ``channels`` when given (names checked)."""
    weights = image_channel_weights(data, schema)
    if not channels:
        return weights
    check_scored_channels(schema, channels)
    keep = torch.zeros(len(schema.channels))
    keep[[schema.channels.index(c) for c in channels]] = 1.0
    return weights * keep.reshape(1, -1, *([1] * (weights.dim() - 2)))


def keep_scorable(data: TaskData, schema, channels: tuple[str, ...]) -> tuple[TaskData, list[int], list[int]]:
    """(the examples that have at least one scored image channel, their indices, the indices of those that have
    none). An example without any scored channel would get an all-zero map, indistinguishable from a healthy one:
    it is left out and named instead. Raises when no example can be scored."""
    has = scored_channel_weights(data, schema, channels).flatten(2).amax(2).sum(1) > 0
    kept = torch.nonzero(has).squeeze(1).tolist()
    missing = torch.nonzero(~has).squeeze(1).tolist()
    if not kept:
        scored = list(channels) or [schema.channels[i] for i in schema.image_indices]
        raise ValueError(f"{data.source}: none of its {len(data)} images has any of the scored channels {scored}; "
                         "choose channels the data has (--score-channels)")
    return (data.subset(torch.tensor(kept)) if missing else data), kept, missing


def healthy_label(loaded: LoadedModel, settings: AnomalySettings) -> int | None:
    """The class index reconstructions are steered to; None for a model without classes (not counterfactual)."""
    names = loaded.schema.class_names
    if not names:
        if settings.method == "counterfactual":
            raise ValueError("the counterfactual method needs a class-conditional checkpoint (with a healthy class); "
                             "this one has no classes: use --method anoddpm, multi-depth or pddpm")
        return None
    if settings.healthy_class not in names:
        raise ValueError(f"--healthy-class {settings.healthy_class!r} is not one of the checkpoint's classes "
                         f"{list(names)}")
    return names.index(settings.healthy_class)


def _partial_diffusion(loaded: LoadedModel, images: Tensor, labels: Tensor | None, depth: float, steps: int,
                       generator: torch.Generator, keep: Tensor | None = None, guidance: float = 1.0) -> Tensor:
    """Noise ``images`` to ``depth`` and run the reverse process back; where ``keep`` is true the known image,
    noised to each step's level, replaces the state after every step (so only the rest is reconstructed)."""
    denoiser, device = loaded.denoiser, loaded.device
    nothing = torch.zeros(images.shape[:2], dtype=torch.bool, device=device)
    alpha, sigma = denoiser.coefficients(torch.full((images.shape[0],), depth, dtype=torch.float64), images)
    kind = model_noise(loaded)
    cpu = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=device)))

    def fresh(x: Tensor) -> Tensor:  # the noise the model was trained with, on the model's device
        return draw_noise(kind, tuple(x.shape), cpu, x.dtype).to(device)

    callback = None
    if keep is not None:
        keep = keep.to(device=device, dtype=images.dtype)
        schedule = denoiser.schedule

        def callback(x: Tensor, t: Tensor, x0: Tensor) -> Tensor:
            a, s = schedule.alpha(t).to(x.dtype), schedule.sigma(t).to(x.dtype)
            known = a * images + s * fresh(images) if float(t) > 0 else images
            return known * keep + x * (1 - keep)

    return sample(denoiser, Conditioning(images, nothing, labels), sampler="ddpm", steps=steps, generator=generator,
                  x_start=alpha * images + sigma * fresh(images), start_t=depth, noise_fn=fresh, callback=callback,
                  guidance_scale=guidance if labels is not None else 1.0, clip_denoised=loaded.codec is None)


def _patched(loaded: LoadedModel, images: Tensor, labels: Tensor | None, settings: AnomalySettings,
             generator: torch.Generator) -> Tensor:
    """pDDPM: each of patches x patches tiles reconstructed from the rest of the image, the tiles stitched."""
    stitched = torch.empty_like(images)
    spatial = images.shape[2:]
    edges = [np.linspace(0, size, settings.patches + 1).round().astype(int) for size in spatial[-2:]]
    for top, bottom in zip(edges[0][:-1], edges[0][1:]):
        for left, right in zip(edges[1][:-1], edges[1][1:]):
            tile = torch.zeros((1, 1, *spatial), dtype=torch.bool, device=images.device)
            tile[..., top:bottom, left:right] = True
            drawn = _partial_diffusion(loaded, images, labels, settings.depth, settings.steps, generator, ~tile,
                                       settings.guidance)
            stitched[..., top:bottom, left:right] = drawn[..., top:bottom, left:right]
    return stitched


def _reconstruct(loaded: LoadedModel, images: Tensor, label: int | None, settings: AnomalySettings, depth: float,
                 generator: torch.Generator) -> Tensor:
    """The healthy version of ``images`` (model units); a latent model heals the latents (module docstring)."""
    images = images.to(loaded.device)
    codec = loaded.codec
    if codec is None:
        return _heal(loaded, images, label, settings, depth, generator)
    latents = codec.encode(images)
    blurred = codec.decode(latents)
    return codec.decode(_heal(loaded, latents, label, settings, depth, generator)) + (images - blurred)


def _heal(loaded: LoadedModel, images: Tensor, label: int | None, settings: AnomalySettings, depth: float,
          generator: torch.Generator) -> Tensor:
    denoiser, device = loaded.denoiser, loaded.device
    labels = None if label is None else torch.full((images.shape[0],), label, dtype=torch.long, device=device)
    if settings.method in ("anoddpm", "multi-depth"):
        return _partial_diffusion(loaded, images, labels, depth, settings.steps, generator, guidance=settings.guidance)
    if settings.method == "pddpm":
        return _patched(loaded, images, labels, settings, generator)
    nothing = torch.zeros(images.shape[:2], dtype=torch.bool, device=device)
    with torch.no_grad():
        encoder = bind(denoiser, Conditioning(images, nothing, None))
        latent = ddim_invert(encoder, images, denoiser.schedule.sampling_times(settings.steps, depth))
    return sample(denoiser, Conditioning(images, nothing, labels), sampler="ddim", steps=settings.steps,
                  guidance_scale=settings.guidance, x_start=latent, start_t=depth, clip_denoised=loaded.codec is None)


def detect_anomalies(loaded: LoadedModel, data: TaskData, settings: AnomalySettings = AnomalySettings(),
                     seed: int = 0) -> dict[str, Tensor]:
    """{"reconstruction": (N, C, ...), "map": (N, 1, ...), "foreground": (N, 1, ...), "score": (N,)} on the CPU."""
    label = healthy_label(loaded, settings)
    generator = torch.Generator(loaded.device).manual_seed(seed)
    weights = scored_channel_weights(data, loaded.schema, settings.channels)
    present = image_channel_weights(data, loaded.schema)  # the foreground is judged on every channel
    draws = [(depth, repeat) for depth in settings.scored_depths()
             for repeat in range(settings.repeats if settings.method != "counterfactual" else 1)]
    reconstructions, maps, bodies = [], [], []
    for first in range(0, len(data), settings.batch_size):
        rows = slice(first, first + settings.batch_size)
        images, w = data.images[rows], weights[rows]
        total, error = torch.zeros_like(images), torch.zeros_like(images)
        for depth, _ in draws:
            healthy = _reconstruct(loaded, images, label, settings, depth, generator).cpu()
            total += healthy
            error += residual_error(images, healthy, settings.residual) * w
        error = (error / len(draws)).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
        body = foreground(to_unit(images), present[rows], settings.foreground_level)
        maps.append(postprocess(error, body, settings.median, settings.smoothing))
        bodies.append(body)
        reconstructions.append(total / len(draws))
    anomaly_map = torch.cat(maps)
    return {"reconstruction": torch.cat(reconstructions), "map": anomaly_map, "foreground": torch.cat(bodies),
            "score": image_scores(anomaly_map, settings.top_fraction)}


def image_truth(data: TaskData, loaded: LoadedModel, healthy_class: str) -> np.ndarray | None:
    """Which images are anomalous: any lesion pixel in the data's masks, else a class other than healthy."""
    if data.truth is not None:
        return data.truth.flatten(1).any(1).numpy()
    names = loaded.schema.class_names
    if names and healthy_class in names and bool((data.labels >= 0).all()):
        return (data.labels != names.index(healthy_class)).numpy()
    return None


def anomaly_task(loaded: LoadedModel, data: TaskData, settings: AnomalySettings = AnomalySettings(),
                 seed: int = 0, thresholds: dict | None = None) -> TaskResult:
    """Maps and scores, scored against the data's masks (pixel level) or classes (image level) when it has them;
    with calibrated ``thresholds`` (tasks/anomaly_thresholds.py) also the decisions and what they score."""
    start = time.perf_counter()
    data, kept, not_scored = keep_scorable(data, loaded.schema, settings.channels)
    result = detect_anomalies(loaded, data, settings, seed=seed)
    seconds = time.perf_counter() - start
    truth = image_truth(data, loaded, settings.healthy_class)
    scores, maps = result["score"].numpy(), result["map"].numpy()
    masks = None if data.truth is None else data.truth.numpy()
    metrics: dict = {}
    if truth is not None and 0 < truth.sum() < len(truth):
        metrics.update(detection_scores(scores, truth))
    if masks is not None and masks.any():
        metrics.update(pixel_scores(maps, masks))
    arrays = {"map": result["map"], "score": result["score"], "reconstruction": result["reconstruction"],
              "foreground": result["foreground"], **({"truth": data.truth} if data.truth is not None else {}),
              **({"input_index": torch.tensor(kept)} if not_scored else {})}  # rows of the input they belong to
    per_image = [{"index": kept[i], "score": float(score),
                  **({"anomalous": bool(truth[i])} if truth is not None else {})} for i, score in enumerate(scores)]
    if thresholds is not None:
        metrics.update(scores_at_threshold(maps, masks, scores, truth, thresholds))
        arrays.update(decision=result["map"] > thresholds["pixel"], flagged=result["score"] > thresholds["image"])
        for row, flagged in zip(per_image, arrays["flagged"].tolist()):
            row["flagged"] = flagged
    report = {"task": "anomaly detection", "data": data.source, "examples": len(data), "settings": vars(settings),
              "noise": model_noise(loaded), "seconds": seconds, "device": str(loaded.device), "metrics": metrics,
              "ground_truth": "masks" if data.truth is not None else ("classes" if truth is not None else "none"),
              "thresholds": thresholds or "none: calibrate with --calibrate-fpr on healthy validation data",
              "images": per_image, "not_scored": {
                  "indices": not_scored, "why": "none of the scored image channels is present in these images"}}
    have = image_availability(data, loaded.schema)
    single = torch.ones(len(data), 1, dtype=torch.bool)
    columns = {"input": to_unit(first_image_channel(data.images, have)),
               "healthy reconstruction": to_unit(first_image_channel(result["reconstruction"], have)),
               "anomaly map": first_image_channel(result["map"], single)}
    if thresholds is not None:
        columns["decision map"] = first_image_channel(arrays["decision"].float(), single)
    if data.truth is not None:
        columns["truth"] = first_image_channel(data.truth.float(), single)
    rows = list(metrics.items()) or [("metrics", "none: the data has no masks or classes")]
    if not_scored:
        rows.append(("images not scored (no scored channel present)", len(not_scored)))
    table = Table(f"anomaly detection ({settings.method}, depth "
                  f"{', '.join(map(str, settings.scored_depths()))}) on {len(data)} images",
                  ("metric", "value"), rows + [("seconds", seconds)])
    return TaskResult(OUTPUT, arrays, report, columns, table, "maps and scores")
