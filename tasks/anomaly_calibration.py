"""Choose an anomaly detector's thresholds on healthy validation data (``detect-anomalies --calibrate-fpr``).

The validation images must be healthy: where the data says which are not (masks with foreground, a class other
than the healthy one), those are left out; data that cannot say is taken as healthy, and the report says so.
"""

from __future__ import annotations

import torch

from ..common.diffusion.loading import LoadedModel
from .anomaly import OUTPUT, AnomalySettings, detect_anomalies, image_truth, keep_scorable
from .anomaly_thresholds import calibrate
from .result import TaskResult, Table
from .task_data import TaskData


def calibration_task(loaded: LoadedModel, data: TaskData, settings: AnomalySettings, fpr: float,
                     seed: int = 0) -> tuple[dict, TaskResult]:
    """(thresholds, result): the thresholds at ``fpr`` and the healthy maps they were chosen on."""
    truth = image_truth(data, loaded, settings.healthy_class)
    if truth is not None:
        healthy = torch.from_numpy(~truth)
        if not bool(healthy.any()):
            raise ValueError(f"{data.source}: none of its {len(data)} images is healthy; calibrate on healthy "
                             "validation images")
        data = data.subset(torch.nonzero(healthy).squeeze(1))
    data, _, not_scored = keep_scorable(data, loaded.schema, settings.channels)  # a zero map is no healthy map
    result = detect_anomalies(loaded, data, settings, seed=seed)
    thresholds = calibrate(result["map"].numpy(), result["foreground"].numpy(), result["score"].numpy(), fpr)
    thresholds["healthy_from"] = "the data's masks or classes" if truth is not None else \
        "assumed: the data has no masks or classes"
    report = {"task": "anomaly threshold calibration", "data": data.source, "examples": len(data),
              "settings": vars(settings), "thresholds": thresholds, "not_scored": len(not_scored)}
    table = Table(f"anomaly thresholds at a false-positive rate of {fpr:g} ({settings.method}), chosen on "
                  f"{len(data)} healthy images", ("threshold", "value"),
                  [("pixel (map value)", thresholds["pixel"]), ("image (score)", thresholds["image"]),
                   ("healthy images", thresholds["images"]), ("foreground pixels", thresholds["pixels"]),
                   ("healthy by", thresholds["healthy_from"])])
    arrays = {"map": result["map"], "score": result["score"], "foreground": result["foreground"]}
    return thresholds, TaskResult(f"{OUTPUT}-calibration", arrays, report, {}, table, "thresholds")
