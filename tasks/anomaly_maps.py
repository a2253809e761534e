"""From reconstruction errors to anomaly maps and image scores, as the published pipelines do it.

- Foreground: the body (or brain) from intensity, so the dark background, where a reconstruction has nothing to
  get wrong but noise, never scores. A pixel is foreground where the input is brighter than ``level`` (in [0, 1]
  units), after a closing that fills small dark gaps inside the body (Behrendt et al. 2023 erode a brain mask
  likewise).
- Post-processing: a median filter removes isolated pixels of reconstruction noise while keeping a lesion's
  edge; a mean filter then smooths what is left (Baur et al. 2021 use a median filter of width 5 at 128 px).
- Scores are computed on the maps as they are: a map is never contrast-stretched per image before scoring
  (that would give every image, healthy or not, the same range of scores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _max_filter(x: Tensor, width: int) -> Tensor:
    pool = F.max_pool2d if x.dim() == 4 else F.max_pool3d
    return pool(x, width, stride=1, padding=width // 2)


def foreground(unit_images: Tensor, weights: Tensor, level: float, closing: int = 3) -> Tensor:
    """(N, 1, ...) bool: where the images (in [0, 1]; ``weights`` (N, C, 1, ...) select the channels each example
    has) are brighter than ``level``, closed by ``closing`` pixels. level 0 keeps every pixel."""
    shape = (unit_images.shape[0], 1, *unit_images.shape[2:])
    if level <= 0:
        return torch.ones(shape, dtype=torch.bool)
    w = weights.to(unit_images.dtype)
    mean = (unit_images * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
    body = (mean > level).to(unit_images.dtype)
    if closing > 1:
        body = -_max_filter(-_max_filter(body, closing), closing)  # dilate, then erode
    return body > 0.5


def median_filter(x: Tensor, width: int) -> Tensor:
    """Per-channel median over a ``width`` neighbourhood (2D maps; 3D maps are filtered slice by slice)."""
    if width <= 1:
        return x
    if x.dim() == 5:
        n, c, d, h, w = x.shape
        return median_filter(x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w), width).reshape(
            n, d, c, h, w).permute(0, 2, 1, 3, 4)
    pad = width // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    patches = padded.unfold(2, width, 1).unfold(3, width, 1)
    return patches.reshape(*patches.shape[:4], -1).median(-1).values


def mean_filter(x: Tensor, width: int) -> Tensor:
    if width <= 1:
        return x
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    return pool(x, width, stride=1, padding=width // 2, count_include_pad=False)


def keep_sign(difference: Tensor, residual: str) -> Tensor:
    """The part of a signed difference (image - healthy) that is scored: both signs (absolute), or only brighter or
    darker than healthy (tasks/settings.py RESIDUALS)."""
    if residual == "brighter":
        return difference.clamp_min(0)
    if residual == "darker":
        return (-difference).clamp_min(0)
    return difference.abs()


def postprocess(error: Tensor, body: Tensor, median: int, smoothing: int) -> Tensor:
    """The anomaly map: median, then mean filtered, zero outside the foreground."""
    return mean_filter(median_filter(error, median), smoothing) * body.to(error.dtype)


def image_scores(maps: Tensor, top_fraction: float) -> Tensor:
    """(N,): the mean of each map's highest ``top_fraction`` of pixels."""
    flat = maps.flatten(1)
    k = max(1, int(round(top_fraction * flat.shape[1])))
    return flat.topk(k, dim=1).values.mean(1)
