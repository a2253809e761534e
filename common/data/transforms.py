"""From loaded examples to model-ready ones: per-channel normalisation, slicing, square padding, resizing.

Intensities are normalised per volume (before slicing) so that all slices of a study share one scale;
percentile clipping to [-1, 1] makes MR (arbitrary units), CT (HU) and X-ray comparable across sites.
Mask label maps become evenly spaced values in [-1, 1] so the diffusion model can generate them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from monai.transforms import Resize, ScaleIntensityRangePercentiles

from ..schema import ChannelSchema, Example


def normalize(example: Example, schema: ChannelSchema, lower: float = 0.5, upper: float = 99.5) -> Example:
    """Image channels percentile-clipped to [-1, 1]; mask labels k -> 2 k / K - 1; absent channels stay 0."""
    scale = ScaleIntensityRangePercentiles(lower=lower, upper=upper, b_min=-1.0, b_max=1.0, clip=True)
    image = np.zeros_like(example.image, dtype=np.float32)
    for c in range(schema.num_channels):
        if not example.available[c]:
            continue
        values = example.image[c]
        if schema.is_mask(schema.channels[c]):
            image[c] = 2.0 * np.clip(values, 0, schema.mask_labels) / schema.mask_labels - 1.0
        elif np.percentile(values, upper) - np.percentile(values, lower) <= 0:
            image[c] = -1.0  # a constant channel carries no contrast; keep it at background
        else:
            image[c] = np.asarray(scale(values[None]), dtype=np.float32)[0]
    return replace(example, image=image)


def mask_values_to_labels(values: np.ndarray | torch.Tensor, mask_labels: int):
    """Inverse of the mask scaling in :func:`normalize`: values in [-1, 1] -> nearest integer label."""
    if isinstance(values, torch.Tensor):
        return torch.round((values.clamp(-1, 1) + 1) * mask_labels / 2).long()
    return np.rint((np.clip(values, -1, 1) + 1) * mask_labels / 2).astype(np.int64)


def to_slices(example: Example) -> list[Example]:
    """A (C, D, H, W) volume -> D examples (C, H, W) that keep the study and patient ids."""
    if not example.is_3d:
        return [example]
    spacing = example.spacing[1:] if example.spacing else None
    return [replace(example, image=np.ascontiguousarray(example.image[:, d]), spacing=spacing,
                    source=f"{example.source}#slice{d}", meta={**example.meta, "slice": d})
            for d in range(example.image.shape[1])]


def pad_to_square(example: Example, schema: ChannelSchema, background: float = -1.0) -> Example:
    """Pad the in-plane axes to a square (centred) so resizing keeps the anatomy's aspect ratio.

    Call after :func:`normalize`: padding uses the normalised background value.
    """
    h, w = example.image.shape[-2:]
    side = max(h, w)
    if h == w:
        return example
    pad = [(0, 0)] * (example.image.ndim - 2)
    pad += [((side - h) // 2, side - h - (side - h) // 2), ((side - w) // 2, side - w - (side - w) // 2)]
    image = np.pad(example.image, pad, mode="constant", constant_values=background)
    image[~example.available] = 0.0
    return replace(example, image=image)


def spatial_shape(size: int, depth: int, ndim: int) -> tuple[int, ...]:
    """The grid examples are resized to: ``size`` on every axis, except a 3D volume's slice axis, which is
    ``depth`` where given (0: ``size``, a cube)."""
    if ndim == 3 and depth:
        return (depth, size, size)
    return (size,) * ndim


def resize(example: Example, schema: ChannelSchema, size: int, depth: int = 0) -> Example:
    """Every spatial axis resized to ``size`` (a volume's slice axis to ``depth`` where given; area averaging
    for images, nearest for masks)."""
    spatial = spatial_shape(size, depth, example.image.ndim - 1)
    if example.image.shape[1:] == spatial:
        return example
    image = np.zeros((example.image.shape[0], *spatial), dtype=np.float32)
    smooth, nearest = Resize(spatial, mode="area"), Resize(spatial, mode="nearest")
    for c in range(schema.num_channels):
        if example.available[c]:
            op = nearest if schema.is_mask(schema.channels[c]) else smooth
            image[c] = np.asarray(op(example.image[c][None]), dtype=np.float32)[0]
    old = example.image.shape[1:]
    spacing = tuple(s * o / n for s, o, n in zip(example.spacing, old, spatial)) if example.spacing else None
    return replace(example, image=image, spacing=spacing)


def prepare(examples: list[Example], schema: ChannelSchema, size: int, *, slices: bool,
            lower: float = 0.5, upper: float = 99.5, depth: int = 0) -> list[Example]:
    """The whole path from loaded examples to model-ready ones of shape (C, size, size) or, for volumes,
    (C, depth or size, size, size)."""
    ready = []
    for example in examples:
        example = normalize(example, schema, lower, upper)
        for item in (to_slices(example) if slices else [example]):
            ready.append(resize(pad_to_square(item, schema), schema, size, depth))
    return ready
