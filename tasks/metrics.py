"""Task metrics on images in [0, 1] (PSNR, SSIM: MONAI) and on anomaly scores (AUROC, AUPRC, Dice: scikit-learn).

Tasks work in the model's [-1, 1]; every image metric is reported on [0, 1] intensities (``to_unit``), so that
noise levels and PSNR read as the issue states them ("Gaussian sigma 0.1, images in [0, 1]").
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

Tensor = torch.Tensor


def to_unit(x: Tensor) -> Tensor:
    """Model space [-1, 1] -> [0, 1] intensities."""
    return (x.clamp(-1.0, 1.0) + 1.0) / 2.0


def from_unit(x: Tensor) -> Tensor:
    """[0, 1] intensities -> model space (not clipped: noisy inputs may leave the range)."""
    return 2.0 * x - 1.0


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB of [0, 1] images (N, C, *spatial)."""
    return PSNRMetric(max_val=1.0, reduction="none")(pred.float(), target.float()).reshape(-1)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM (7-pixel window, mean over channels) of [0, 1] images (N, C, *spatial)."""
    metric = SSIMMetric(spatial_dims=pred.dim() - 2, data_range=1.0, win_size=7, reduction="none")
    return metric(pred.float(), target.float()).reshape(pred.shape[0], -1).mean(1)


def image_quality(pred: Tensor, target: Tensor, have: Tensor | None = None) -> dict[str, float]:
    """Mean and standard deviation of PSNR and SSIM over (image, channel) pairs; have: (N, C) bool selects the
    pairs to score (the image channels each example really has; masks and absent channels are not images)."""
    if have is not None:
        rows = have.reshape(-1)
        pred = pred.reshape(-1, 1, *pred.shape[2:])[rows]
        target = target.reshape(-1, 1, *target.shape[2:])[rows]
    p, s = psnr(pred, target), ssim(pred, target)
    return {"psnr": float(p.mean()), "psnr_std": float(p.std()) if len(p) > 1 else 0.0,
            "ssim": float(s.mean()), "ssim_std": float(s.std()) if len(s) > 1 else 0.0}


def detection_scores(scores: np.ndarray, anomalous: np.ndarray) -> dict[str, float]:
    """Image-level AUROC and AUPRC (average precision) of scores against 0/1 truth."""
    anomalous = np.asarray(anomalous).astype(bool)
    if anomalous.all() or not anomalous.any():
        raise ValueError("image-level AUROC needs both normal and anomalous images in the test set")
    return {"auroc": float(roc_auc_score(anomalous, scores)),
            "auprc": float(average_precision_score(anomalous, scores)),
            "anomalous_fraction": float(anomalous.mean())}


def pixel_scores(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Pixel AUROC and AUPRC over all pixels, and the best Dice over thresholds (Dice = F1, so the PR curve's best
    F1: chosen on the test masks themselves, an upper bound; tasks/anomaly_thresholds.py fixes one beforehand)."""
    truth, values = np.asarray(masks).reshape(-1).astype(bool), np.asarray(maps, dtype=np.float64).reshape(-1)
    if not truth.any():
        raise ValueError("pixel metrics need at least one anomalous pixel in the masks")
    precision, recall, thresholds = precision_recall_curve(truth, values)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return {"pixel_auroc": float(roc_auc_score(truth, values)),
            "pixel_auprc": float(average_precision_score(truth, values)), "best_dice": float(f1[best]),
            "best_dice_threshold": float(thresholds[best]) if len(thresholds) else float("nan")}
