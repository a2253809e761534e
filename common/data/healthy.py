"""Healthy-only training data: anomaly models learn what healthy looks like, so lesions are what they cannot draw.

Which examples are healthy is read from the data itself, in this order:
- a mask channel (tumour, lesion): an example is healthy when its mask is present and has no foreground;
  an example without its mask is left out (nobody knows whether it is healthy);
- class names: an example is healthy when its class is one of the healthy classes (unlabelled ones are left out).
Data with neither cannot say what is healthy, and is refused with the fix.
"""

from __future__ import annotations

import torch

from .tensors import TrainingTensors

FOREGROUND = -1.0 + 1e-3  # masks are normalised to [-1, 1]: background is -1, any label is above


def healthy_rows(data: TrainingTensors, healthy_classes: tuple[str, ...], where: str = "the data") -> torch.Tensor:
    """(N,) bool: which examples are healthy (module docstring). Raises ValueError naming what is missing."""
    schema = data.schema
    masks = schema.mask_indices
    if masks:
        present = data.available[:, list(masks)].all(1)
        lesion = (data.images[:, list(masks)] > FOREGROUND).flatten(1).any(1)
        return present & ~lesion
    if schema.class_names:
        unknown = sorted(set(healthy_classes) - set(schema.class_names))
        if not healthy_classes or unknown:
            raise ValueError(f"{where}: healthy-only training needs the healthy class(es) among "
                             f"{list(schema.class_names)}; got {list(healthy_classes)} (pass --healthy-class NAME, "
                             "or [train] healthy_classes in the plan)")
        wanted = torch.tensor([schema.class_names.index(name) for name in healthy_classes])
        return torch.isin(data.labels.cpu(), wanted)
    raise ValueError(f"{where}: healthy-only training needs a mask channel (examples without foreground are "
                     "healthy) or class names (with the healthy class named); this data has neither: "
                     f"channels {list(schema.channels)}")


def healthy_only(data: TrainingTensors, healthy_classes: tuple[str, ...], where: str = "the data") -> TrainingTensors:
    """The healthy examples of ``data``; refused (ValueError) when none is left, rather than training on nothing."""
    rows = healthy_rows(data, healthy_classes, where)
    if not bool(rows.any()):
        raise ValueError(f"{where}: none of its {len(data)} examples is healthy (no example without mask foreground "
                         f"or of the classes {list(healthy_classes)}); check the mask channel or --healthy-class")
    return data.subset(torch.nonzero(rows.to(data.images.device)).squeeze(1))
