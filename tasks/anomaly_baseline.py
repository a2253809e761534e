"""The simple baseline every diffusion anomaly detector is shown beside: each pixel's intensity z-score against
healthy statistics (per-pixel mean and standard deviation of the healthy training images, per channel).

Its map goes through the same foreground, filters and image score as the diffusion maps (tasks/anomaly_maps.py),
so the comparison is between the reconstructions, not the post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .anomaly_maps import foreground, image_scores, keep_sign, postprocess
from .metrics import to_unit

Tensor = torch.Tensor


@dataclass(frozen=True)
class HealthyStatistics:
    mean: Tensor  # (1, C, ...) in [0, 1] units
    std: Tensor

    @classmethod
    def of(cls, unit_images: Tensor, weights: Tensor, floor: float = 0.02) -> "HealthyStatistics":
        """From healthy images in [0, 1]; ``weights`` (N, C, 1, ...) mark the channels each has; ``floor`` keeps
        a pixel that never varies (the background) from giving infinite scores."""
        count = weights.sum(0, keepdim=True).clamp_min(1.0)
        mean = (unit_images * weights).sum(0, keepdim=True) / count
        var = (((unit_images - mean) ** 2) * weights).sum(0, keepdim=True) / count
        return cls(mean, var.sqrt().clamp_min(floor))


def zscore_anomalies(statistics: HealthyStatistics, images: Tensor, weights: Tensor, *, foreground_level: float,
                     median: int, smoothing: int, top_fraction: float, residual: str = "absolute",
                     present: Tensor | None = None) -> dict[str, Tensor]:
    """{"map", "foreground", "score"} as tasks/anomaly.py's detect_anomalies gives them; images in [-1, 1];
    ``weights`` the scored channels, ``present`` every channel each example has (the foreground; default weights),
    ``residual`` the sign scored (tasks/settings.py RESIDUALS)."""
    unit = to_unit(images)
    signed = (unit - statistics.mean) / statistics.std
    z = keep_sign(signed, residual) * weights
    error = z.sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1.0)
    body = foreground(unit, weights if present is None else present, foreground_level)
    maps = postprocess(error, body, median, smoothing)
    return {"map": maps, "foreground": body, "score": image_scores(maps, top_fraction)}
