"""Image-to-image translation: generate a missing contrast given the present ones (the channel-conditional model).

K draws of the target channel with the source channels given clean are averaged (Monte-Carlo estimate of the
posterior mean, the PSNR-optimal output); their per-pixel variance is the uncertainty map. The classical
baseline needs no training: the source contrast histogram-matched to the target's intensity distribution
(the "identity" baseline: each image's quantiles mapped onto a pooled reference histogram).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..common.diffusion.loading import LoadedModel
from .draws import draw_channel
from .figures import middle_slice
from .metrics import image_quality, to_unit
from .result import TaskResult, Table
from .settings import TRANSLATE_SAMPLERS, TranslateSettings  # noqa: F401 (re-exported)

Tensor = torch.Tensor
OUTPUT = "translate"  # the file stem of the outputs: <out>/translate.npz, .json, .png


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


def channel_indices(schema, sources: list[str], target: str) -> tuple[list[int], int]:
    """The schema indices of the source and target image channels, or a ValueError saying which is wrong."""
    images = [schema.channels[i] for i in schema.image_indices]
    for name in [*sources, target]:
        if name not in images:
            raise ValueError(f"{name!r} is not an image channel of the checkpoint's schema {list(schema.channels)}; "
                             f"choose from {images}")
    if target in sources:
        raise ValueError(f"{target} cannot be both --from and --to")
    return [schema.index(c) for c in sources], schema.index(target)


def supervised_unet(pairs, sources: list[int], target: int, recipe) -> tuple[object, dict]:
    """The supervised UNet (sources -> target) trained on ``pairs`` (TaskData) that have all of them."""
    from .unet_baseline import train_unet

    keep = pairs.available[:, [*sources, target]].all(dim=1)
    if not keep.any():
        raise ValueError(f"{pairs.source} has no example with all of the source and target channels")
    trained = train_unet(pairs.images[keep][:, sources], pairs.images[keep, target], "translation", recipe)
    return trained, {"pairs": int(keep.sum()), "epochs": trained.epochs, "train_seconds": trained.seconds,
                     "data": pairs.source}


def translate_task(loaded: LoadedModel, data, sources: list[str], target_name: str,
                   settings: TranslateSettings = TranslateSettings(), reference: Tensor | None = None,
                   unet=None, seed: int = 0) -> TaskResult:
    """The target contrast from the sources for every example that has them, next to the histogram-matched source
    (against ``reference`` images of the target, default the data's own) and a supervised UNet (``unet``: a
    ``(trained, info)`` from :func:`supervised_unet`); scored where the data has the target."""
    source_indices, target = channel_indices(loaded.schema, sources, target_name)
    keep = data.available[:, source_indices].all(dim=1)
    if not keep.any():
        raise ValueError(f"no example of {data.source} has all of {sources}")
    data = data.subset(torch.nonzero(keep).flatten())
    given = torch.zeros_like(data.available)
    given[:, source_indices] = True
    start = time.perf_counter()
    mean, variance = translate(loaded, data.images, given, target, settings, seed)
    seconds, has_target = time.perf_counter() - start, data.available[:, target]
    pool = reference if reference is not None else data.images[has_target, target]
    outputs = {"histogram-matched source": histogram_matched(data.images[:, source_indices[0]], pool)} \
        if len(pool) else {}
    if unet is not None:
        outputs["supervised UNet"] = unet[0].predict(data.images[:, source_indices]).clamp(-1, 1)
    outputs["diffusion"] = mean
    report = {"task": "translation", "data": data.source, "examples": len(data), "from": sources, "to": target_name,
              "settings": vars(settings), "seconds": seconds, "device": str(loaded.device),
              "mean_uncertainty": float(variance.mean()), "metrics": {},
              **({"supervised_unet": unet[1]} if unet is not None else {})}
    table = None
    if has_target.any():
        truth = to_unit(data.images[has_target, target])[:, None]
        for name, output in outputs.items():
            report["metrics"][name] = image_quality(to_unit(output[has_target])[:, None], truth)
        table = Table(f"{'+'.join(sources)} -> {target_name} on {int(has_target.sum())} images, [0, 1] units",
                      ("method", "PSNR (dB)", "SSIM"), [(n, m["psnr"], m["ssim"]) for n, m in report["metrics"].items()])
    columns = {f"source {sources[0]}": to_unit(middle_slice(data.images[:, source_indices[0]])),
               "diffusion": to_unit(middle_slice(mean)), "uncertainty map": middle_slice(variance)}
    if has_target.all():
        columns["target"] = to_unit(middle_slice(data.images[:, target]))
    names = {"diffusion": "translated", "supervised UNet": "supervised_unet",
             "histogram-matched source": "histogram_matched"}
    arrays = {names[k]: to_unit(v) for k, v in outputs.items()} | {"variance": variance}
    return TaskResult(OUTPUT, arrays, report, columns, table, f"{seconds:.1f} s")
