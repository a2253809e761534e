"""Mask values as found in files -> integer labels 0..K, the same way for every format."""

from __future__ import annotations

import numpy as np


def to_labels(values: np.ndarray, mask_values: tuple[int, ...], binary_default: bool = False) -> np.ndarray:
    """Raw mask values -> float32 labels.

    mask_values: raw values mapped to labels 1..K in order; anything else becomes background.
    binary_default: with no mask_values, any non-zero value is label 1 (PNG masks are usually 0/255).
    Otherwise the values are taken as labels already (0/1/2 NIfTI label maps).
    """
    if mask_values:
        labels = np.zeros(values.shape, dtype=np.float32)
        for label, raw in enumerate(mask_values, start=1):
            labels[np.isclose(values, raw)] = label
        return labels
    if binary_default:
        return (values > 0).astype(np.float32)
    return np.rint(values).astype(np.float32)
