"""Calibrated anomaly decisions: thresholds chosen on healthy validation data at a stated false-positive rate.

A best-threshold Dice is chosen on the test masks themselves, so it says what the maps could do, not what a
site gets. A site needs a threshold fixed before it sees the cases: the (1 - fpr) quantile of the healthy
validation maps' foreground pixels (pixel threshold) and of their image scores (image threshold). They are
saved beside the model (``<model>.anomaly-thresholds.json``), keyed by the model file's SHA-256 and the
detection settings, since a threshold means nothing for another model or another method.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..common.checkpoint import file_sha256

SUFFIX = ".anomaly-thresholds.json"


def thresholds_path(model: str | Path) -> Path:
    model = Path(model)
    return model.with_name(model.name + SUFFIX)


LATER_DEFAULTS = {"residual": "absolute", "channels": ()}  # left out of the key at these values: older files match


def settings_key(settings) -> dict:
    """The settings a threshold depends on (batch size does not change a map)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()
            if k not in ("batch_size", "healthy_class") and not (k in LATER_DEFAULTS and LATER_DEFAULTS[k] == v)}


def calibrate(maps: np.ndarray, foreground: np.ndarray, scores: np.ndarray, fpr: float) -> dict:
    """Pixel and image thresholds that flag about ``fpr`` of healthy foreground pixels and healthy images."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"the false-positive rate must be in (0, 1), got {fpr}")
    pixels = np.asarray(maps, dtype=np.float64)[np.asarray(foreground, dtype=bool)]
    if not len(pixels):
        raise ValueError("the calibration images have no foreground pixels (lower --foreground-level)")
    return {"fpr": fpr, "pixel": float(np.quantile(pixels, 1.0 - fpr)),
            "image": float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - fpr)),
            "images": int(len(scores)), "pixels": int(len(pixels))}


def save_thresholds(model: str | Path, settings, thresholds: dict, data: str) -> Path:
    """Add (or replace) this model's and settings' entry in the file beside the model."""
    path = thresholds_path(model)
    entries = json.loads(path.read_text()).get("entries", []) if path.exists() else []
    key, digest = settings_key(settings), file_sha256(model)
    entries = [e for e in entries if not (e["settings"] == key and e["model_sha256"] == digest)]
    entries.append({"model_sha256": digest, "settings": key, "calibration_data": data,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **thresholds})
    path.write_text(json.dumps({"kind": "meddiff-anomaly-thresholds", "entries": entries}, indent=2))
    return path


def load_thresholds(model: str | Path, settings) -> dict | None:
    """This model's thresholds for these settings, or None when it was never calibrated with them."""
    path = thresholds_path(model)
    if not path.exists():
        return None
    try:
        entries = json.loads(path.read_text())["entries"]
    except (ValueError, KeyError) as error:
        raise ValueError(f"{path} is not a thresholds file ({error}); delete it and calibrate again") from None
    key, digest = json.loads(json.dumps(settings_key(settings))), file_sha256(model)
    found = [e for e in entries if e["settings"] == key and e["model_sha256"] == digest]
    return found[-1] if found else None


def scores_at_threshold(maps: np.ndarray, masks: np.ndarray | None, scores: np.ndarray,
                        anomalous: np.ndarray | None, thresholds: dict) -> dict:
    """What a site gets at the calibrated thresholds: pixel Dice / precision / recall over all images, and the
    image-level sensitivity, specificity and false-positive rate."""
    out: dict = {"threshold_fpr": thresholds["fpr"], "pixel_threshold": thresholds["pixel"],
                 "image_threshold": thresholds["image"]}
    if masks is not None and np.asarray(masks).any():
        flagged, truth = np.asarray(maps) > thresholds["pixel"], np.asarray(masks, dtype=bool)
        hit = float(np.logical_and(flagged, truth).sum())
        out.update({"dice_at_threshold": 2 * hit / max(float(flagged.sum() + truth.sum()), 1.0),
                    "pixel_precision_at_threshold": hit / max(float(flagged.sum()), 1.0),
                    "pixel_recall_at_threshold": hit / float(truth.sum())})
    if anomalous is not None and 0 < np.asarray(anomalous).sum() < len(anomalous):
        flags, truth = np.asarray(scores) > thresholds["image"], np.asarray(anomalous, dtype=bool)
        out.update({"sensitivity_at_threshold": float(flags[truth].mean()),
                    "specificity_at_threshold": float((~flags[~truth]).mean()),
                    "image_fpr_at_threshold": float(flags[~truth].mean())})
    return out

