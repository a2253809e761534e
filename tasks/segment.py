"""Segmentation as conditional generation: sample the mask channel given the image channels, many times.

The global model learnt p(mask, images) jointly (any channel can be given clean), so a segmentation is a draw
of the mask channel with the site's image channels given. An implicit ensemble of N draws, each from its own
noise (Wolleb et al. 2022), gives per pixel:
- the probability of each label (the fraction of draws that chose it) and of foreground (any label > 0);
- the segmentation: the most frequent label (for a binary mask: foreground where p >= 0.5);
- the uncertainty: the variance of the sampled mask values across draws (Wolleb's uncertainty map).

Scored with MONAI's Dice and 95th-percentile Hausdorff distance (in pixels) against the data's own masks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..common.data.transforms import mask_values_to_labels
from ..common.diffusion.loading import LoadedModel
from .draws import draw_channel
from .synthesis import synthesize
from .figures import first_image_channel, middle_slice
from .metrics import to_unit
from .result import TaskResult, Table
from .task_data import image_availability
from .settings import SEGMENT_SAMPLERS, SegmentSettings  # noqa: F401 (re-exported)

Tensor = torch.Tensor
OUTPUT = "segment"  # the file stem of the outputs: <out>/segment.npz, .json, .png


@dataclass
class Segmentation:
    """probability: (N, L + 1, *spatial) per label (0 = background); labels: (N, *spatial) long (the vote);
    variance: (N, *spatial) of the sampled values; draws: (S, N, *spatial) long, every draw's labels."""

    probability: Tensor
    labels: Tensor
    variance: Tensor
    draws: Tensor

    @property
    def foreground(self) -> Tensor:
        """(N, *spatial) probability that a pixel belongs to any label."""
        return 1.0 - self.probability[:, 0]


def segment(loaded: LoadedModel, images: Tensor, given: Tensor, mask_channel: int,
            settings: SegmentSettings = SegmentSettings(), seed: int = 0) -> Segmentation:
    """images: (N, C, *spatial) model units; given: (N, C) bool, the image channels each example has (the mask
    channel must not be given)."""
    if given[:, mask_channel].any():
        raise ValueError("the mask channel being segmented cannot be given")
    if not given.any(dim=1).all():
        raise ValueError("every example needs at least one image channel to segment from")
    values = draw_channel(loaded, images, given, mask_channel, samples=settings.samples, sampler=settings.sampler,
                          steps=settings.steps, batch_size=settings.batch_size, seed=seed)
    n_labels = loaded.schema.mask_labels
    draws = mask_values_to_labels(values, n_labels)
    probability = torch.stack([(draws == label).float().mean(0) for label in range(n_labels + 1)], dim=1)
    return Segmentation(probability, probability.argmax(dim=1), values.var(0, unbiased=False), draws)


def dice_and_hd95(prediction: Tensor, truth: Tensor) -> dict[str, float]:
    """Foreground Dice and HD95 (pixels) per example, averaged over examples whose truth is not empty (both are
    undefined there); on empty truths, the fraction with any predicted foreground is reported instead.
    prediction, truth: (N, *spatial) bool."""
    from monai.metrics import compute_dice, compute_hausdorff_distance

    prediction, truth = prediction.bool(), truth.bool()
    present = truth.flatten(1).any(dim=1)
    result = {"examples": int(len(truth)), "with_foreground": int(present.sum()),
              "false_positive_rate_on_empty": float(prediction[~present].flatten(1).any(dim=1).float().mean())
              if (~present).any() else float("nan")}
    if not present.any():
        return {**result, "dice": float("nan"), "dice_std": float("nan"), "hd95": float("nan")}
    p, t = prediction[present][:, None].float(), truth[present][:, None].float()
    dice = compute_dice(p, t, include_background=True, ignore_empty=False).flatten()
    hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95).flatten()
    finite = hd[torch.isfinite(hd)]  # an empty prediction has no distance
    return {**result, "dice": float(dice.mean()), "dice_std": float(dice.std()) if len(dice) > 1 else 0.0,
            "hd95": float(finite.mean()) if len(finite) else float("nan"),
            "hd95_undefined": int(len(hd) - len(finite))}


def as_numpy(segmentation: Segmentation) -> dict[str, np.ndarray]:
    return {"probability": segmentation.probability.numpy(), "labels": segmentation.labels.numpy().astype(np.uint8),
            "variance": segmentation.variance.numpy()}


def synthetic_pairs(loaded: LoadedModel, count: int, mask_channel: int, *, steps: int = 25, batch_size: int = 32,
                    seed: int = 0) -> tuple[Tensor, Tensor]:
    """``count`` (images, mask) pairs drawn jointly from the model (nothing given): images (N, C, *spatial) in
    model units with the mask channel zeroed, masks (N, *spatial) bool (foreground = any label)."""
    shape = (loaded.schema.num_channels, *loaded.spatial_shape)
    nothing = torch.zeros(loaded.schema.num_channels, dtype=torch.bool)
    images, _ = synthesize(loaded, count, None, torch.zeros(shape), nothing, steps=steps, batch_size=batch_size,
                           seed=seed, progress=False)
    masks = mask_values_to_labels(images[:, mask_channel], loaded.schema.mask_labels) > 0
    images[:, mask_channel] = 0.0
    return images, masks


def mask_channel(schema, name: str | None) -> int:
    """The index of the mask channel to sample: ``name``, or the schema's first mask channel."""
    masks = [schema.channels[i] for i in schema.mask_indices]
    if not masks:
        raise ValueError(f"the checkpoint's schema {list(schema.channels)} has no mask channel; train the model on "
                         "data with a mask channel (e.g. [data] channels = [..., 'mask'])")
    if (name or masks[0]) not in masks:
        raise ValueError(f"{name!r} is not a mask channel of the checkpoint's schema {list(schema.channels)}; "
                         f"choose from {masks}")
    return schema.index(name or masks[0])


def segment_task(loaded: LoadedModel, data, index: int, settings: SegmentSettings = SegmentSettings(),
                 unets: dict | None = None, seed: int = 0) -> TaskResult:
    """The ensemble segmentation of mask channel ``index`` given each example's image channels, scored with Dice
    and HD95 where the data has masks, next to UNets (``unets``: route -> (trained UNet, info), tasks/
    unet_baseline.py) applied to the same images."""
    schema = loaded.schema
    given = image_availability(data, schema)
    start = time.perf_counter()
    result = segment(loaded, data.images, given, index, settings, seed)
    seconds, truth_known = time.perf_counter() - start, data.available[:, index]
    report = {"task": "segmentation", "data": data.source, "examples": len(data), "mask_channel": schema.channels[index],
              "settings": vars(settings), "seconds": seconds, "device": str(loaded.device),
              "mean_uncertainty": float(result.variance.mean()), "metrics": {}}
    columns = {"image": to_unit(first_image_channel(data.images, given)), "probability": result.foreground,
               "segmentation": (result.labels > 0).float(), "uncertainty map": result.variance}
    labels = mask_values_to_labels(data.images[:, index], schema.mask_labels)
    if truth_known.any():
        report["metrics"] = dice_and_hd95(result.labels[truth_known] > 0, labels[truth_known] > 0)
        columns["truth"] = (labels > 0).float()
    test_inputs = (data.images * given.reshape(given.shape + (1,) * (data.images.dim() - 2)))[:, list(schema.image_indices)]
    report["unet"] = {}
    for route, (trained, info) in (unets or {}).items():
        probability = trained.predict(test_inputs)
        scores = dict(info)
        if truth_known.any():
            scores.update(dice_and_hd95(probability[truth_known] > 0.5, labels[truth_known] > 0))
        report["unet"][route] = scores
        columns[f"UNet ({route})"] = (probability > 0.5).float()
    return TaskResult(OUTPUT, as_numpy(result), report, {k: middle_slice(v) for k, v in columns.items()},
                      _table(report), f"{seconds:.1f} s")


def _table(report: dict) -> Table | None:
    m = report["metrics"]
    if not m:
        return None
    rows = [("diffusion ensemble", m["dice"], m["hd95"], m["false_positive_rate_on_empty"])]
    rows += [(f"UNet, {route}", r["dice"], r["hd95"], r["false_positive_rate_on_empty"])
             for route, r in report["unet"].items()]
    return Table(f"segmentation of {report['mask_channel']} on {m['examples']} images ({m['with_foreground']} with "
                 "foreground)", ("method", "Dice", "HD95 (px)", "false positives on empty"), rows)


def train_unets(loaded: LoadedModel, index: int, real, synthetic: int, recipe, steps: int, batch_size: int,
                seed: int) -> dict:
    """Route -> (trained UNet, info): on ``real`` pairs (TaskData, or None) and/or on ``synthetic`` pairs drawn
    from the model; the UNet sees every image channel of the schema (absent ones are 0, as the model does)."""
    from .unet_baseline import train_unet

    schema, routes = loaded.schema, {}
    if real is not None:
        has = real.available[:, index]
        if not has.any():
            raise ValueError(f"{real.source} has no {schema.channels[index]} masks to train the UNet on")
        routes["real pairs"] = (real.images[has], mask_values_to_labels(real.images[has, index], schema.mask_labels) > 0)
    if synthetic > 0:
        routes["synthetic pairs"] = synthetic_pairs(loaded, synthetic, index, steps=steps, batch_size=batch_size,
                                                    seed=seed)
    trained = {}
    for route, (images, masks) in routes.items():
        unet = train_unet(images[:, list(schema.image_indices)], masks, "segmentation", recipe)
        trained[route] = (unet, {"pairs": int(len(masks)), "epochs": unet.epochs, "train_seconds": unet.seconds})
    return trained
