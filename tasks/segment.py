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

from dataclasses import dataclass

import numpy as np
import torch

from ..common.data.transforms import mask_values_to_labels
from ..common.diffusion.generate import Conditioning, sample
from ..common.diffusion.loading import LoadedModel
from .draws import draw_channel

Tensor = torch.Tensor


@dataclass(frozen=True)
class SegmentSettings:
    samples: int = 8  # ensemble size
    sampler: str = "ddim"
    steps: int = 25
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.samples < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError("samples, steps and batch_size must be >= 1")


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
    generator = torch.Generator(loaded.device).manual_seed(seed)
    shape = (loaded.schema.num_channels,) + (loaded.resolution,) * loaded.spec.spatial_dims
    drawn = []
    for first in range(0, count, batch_size):
        n = min(batch_size, count - first)
        conditioning = Conditioning.nothing((n, *shape), loaded.device)
        drawn.append(sample(loaded.denoiser, conditioning, steps=steps, generator=generator).cpu())
    images = torch.cat(drawn)
    masks = mask_values_to_labels(images[:, mask_channel], loaded.schema.mask_labels) > 0
    images[:, mask_channel] = 0.0
    return images, masks
