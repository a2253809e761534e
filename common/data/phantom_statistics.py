"""Does a set of images look like the phantom? Per-tissue statistics computed the same way on real and generated.

Tissues are told apart by the CT channel's normalised value (air < -0.6 <= soft tissue < 0.4 <= bone), as a
radiologist would by Hounsfield bands; inside each band we compare the area fraction and the mean MR
intensities, and per class the lesion-mask area. A model that has not learned the phantom fails these.
"""

from __future__ import annotations

import numpy as np

from .phantom import SCHEMA

BANDS = {"air": (-np.inf, -0.6), "soft tissue": (-0.6, 0.4), "bone": (0.4, np.inf)}
MR_CHANNELS = ("t1", "t2", "flair")
AREA_TOLERANCE = 0.05  # absolute area fraction
MEAN_TOLERANCE = 0.15  # in normalised units (the data range [-1, 1] is 2 wide)


def tissue_statistics(images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """images: (N, 5, H, W) in [-1, 1] with the phantom's channels; labels: (N,) class indices or None."""
    ct = images[:, SCHEMA.index("ct")]
    stats: dict[str, float] = {}
    for band, (low, high) in BANDS.items():
        inside = (ct >= low) & (ct < high)
        stats[f"{band} area"] = float(inside.mean())
        for name in MR_CHANNELS:
            values = images[:, SCHEMA.index(name)][inside]
            stats[f"{band} {name} mean"] = float(values.mean()) if values.size else float("nan")
    mask = images[:, SCHEMA.index("mask")] > 0
    if labels is not None:
        for index, name in enumerate(SCHEMA.class_names):
            chosen = labels == index
            if chosen.any():
                stats[f"{name} lesion area"] = float(mask[chosen].mean())
    return stats


def compare(real: dict[str, float], generated: dict[str, float]) -> list[tuple[str, float, float, float, bool]]:
    """Rows (statistic, real, generated, tolerance, within) for every statistic both sides have."""
    rows = []
    for key, value in real.items():
        if key not in generated:
            continue
        tolerance = MEAN_TOLERANCE if key.endswith("mean") else AREA_TOLERANCE
        other = generated[key]
        rows.append((key, value, other, tolerance, bool(abs(other - value) <= tolerance)))
    return rows
