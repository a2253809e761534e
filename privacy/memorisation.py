"""Memorisation audit before synthetic images leave a site.

Near-copy test: for each synthetic image, the distance to its nearest training image. What counts as "near" is
calibrated on the site's own held-out images, which the model never saw: a synthetic image closer to the
training set than the ``alpha`` quantile of held-out-to-training distances is closer than (1 - alpha) of
genuinely new images get, and is flagged and dropped. With independent samples about ``alpha`` of them are
flagged by chance; copies of training images are flagged.

Membership inference: the AUROC of telling training images from held-out ones by their denoising loss (lower
loss -> "member"). 0.5 means the model's losses do not reveal membership; near 1 means they do.

Distances are Euclidean on the image channels (masks excluded) present in every training example, at the model's
resolution, in the model's [-1, 1] intensity units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_roc_auc

from ..common.data.tensors import TrainingTensors
from ..common.diffusion.denoiser import Denoiser
from ..common.diffusion.loss import LossConfig


@dataclass(frozen=True)
class AuditResult:
    flagged: np.ndarray  # (M,) bool: synthetic images that are near-copies
    distances: np.ndarray  # (M,) distance of each synthetic image to its nearest training image
    threshold: float
    alpha: float
    holdout_distances: np.ndarray  # (K,) the calibration: held-out image -> nearest training image

    @property
    def fraction_flagged(self) -> float:
        return float(self.flagged.mean()) if self.flagged.size else 0.0

    def summary(self) -> dict:
        return {"synthetic": int(self.flagged.size), "flagged": int(self.flagged.sum()),
                "fraction_flagged": self.fraction_flagged, "threshold": self.threshold, "alpha": self.alpha,
                "median_distance_synthetic": float(np.median(self.distances)) if self.distances.size else None,
                "median_distance_holdout": float(np.median(self.holdout_distances))}


def audit_channels(train: TrainingTensors) -> list[int]:
    """Image channels (not masks) that every training example has; all image channels if none is complete."""
    images = list(train.schema.image_indices)
    complete = [c for c in images if bool(train.available[:, c].all())]
    return complete or images


def nearest_distances(queries: torch.Tensor, references: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(M,) Euclidean distance from each query (M, ...) to its nearest reference (N, ...)."""
    refs = references.flatten(1).double()
    out = []
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk].flatten(1).double()
        out.append(torch.cdist(block, refs).min(dim=1).values)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def audit_near_copies(synthetic: torch.Tensor, train: TrainingTensors, holdout: TrainingTensors,
                      alpha: float = 0.01) -> AuditResult:
    """synthetic: (M, C, *spatial) in the schema's channel order and [-1, 1]; train/holdout: the site's data."""
    if len(holdout) < 2:
        raise ValueError("the memorisation audit needs at least 2 held-out images to calibrate its threshold")
    channels = audit_channels(train)
    reference = train.images[:, channels]
    holdout_d = nearest_distances(holdout.images[:, channels], reference).numpy()
    distances = nearest_distances(synthetic[:, channels].to(reference.dtype), reference).numpy()
    threshold = float(np.quantile(holdout_d, alpha))
    return AuditResult(distances < threshold, distances, threshold, alpha, holdout_d)


@torch.no_grad()
def denoising_losses(denoiser: Denoiser, data: TrainingTensors, draws: int = 8, seed: int = 0,
                     batch_size: int = 64) -> torch.Tensor:
    """(N,) each example's denoising loss averaged over ``draws`` fixed (t, noise) draws."""
    device = next(denoiser.model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    losses = torch.zeros(len(data), dtype=torch.float64)
    for _ in range(draws):
        for start in range(0, len(data), batch_size):
            part = data.subset(torch.arange(start, min(start + batch_size, len(data))))
            value = denoiser.loss(part.images.to(device), part.available.to(device), part.labels.to(device),
                                  LossConfig(0.0, 0.0), generator)
            losses[start:start + len(part)] += value.double().cpu() / draws
    return losses


def membership_auroc(member_losses: torch.Tensor, holdout_losses: torch.Tensor) -> float:
    """AUROC of the loss attack: score = -loss, members labelled 1."""
    scores = torch.cat([-member_losses, -holdout_losses]).double()
    labels = torch.cat([torch.ones(len(member_losses)), torch.zeros(len(holdout_losses))])
    return float(compute_roc_auc(scores, labels))
