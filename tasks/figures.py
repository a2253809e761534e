"""PNG panels of task results: one row per example, one column per image (input, output, map, truth ...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..common.grid import labelled_grid


INPUTS = ("input", "noisy", "image", "source")
REFERENCES = ("reference", "truth", "clean", "target")
OUTPUTS = ("diffusion", "healthy reconstruction", "anomaly map", "uncertainty map", "probability", "segmentation")


def column_role(name: str) -> str:
    """input, output (the diffusion model's), reference (ground truth) or baseline, from the column's name."""
    lowered = name.lower()
    for role, names in (("input", INPUTS), ("reference", REFERENCES), ("output", OUTPUTS)):
        if any(lowered == n or lowered.startswith(n + " ") for n in names):
            return role
    return "baseline"


def panel(columns: dict[str, torch.Tensor], path: str | Path, rows: int = 8, scale: int = 2) -> Path:
    """Save columns of (N, H, W) images in [0, 1] (maps are scaled by their own 99th percentile) as a PNG whose
    header names each column with its role: input, output, baseline or reference."""
    tiles = []
    for name, images in columns.items():
        values = images[:rows].float().numpy()
        if name.endswith("map"):
            values = values / max(float(np.percentile(values, 99)), 1e-6)
        tiles.append(np.clip(values, 0, 1))
    names = [f"{column_role(name)}: {name.replace('_', ' ')}" for name in columns]
    return labelled_grid([[t[i] for t in tiles] for i in range(len(tiles[0]))], names, [], path, scale)


def first_image_channel(images: torch.Tensor, have: torch.Tensor) -> torch.Tensor:
    """(N, H, W): each example's first available image channel (middle slice of 3D), for panels."""
    index = have.float().argmax(dim=1)
    return middle_slice(images[torch.arange(images.shape[0]), index])


def middle_slice(volumes: torch.Tensor) -> torch.Tensor:
    """(N, H, W) for a panel: 2D images as they are, 3D (N, D, H, W) by their middle slice."""
    return volumes if volumes.dim() == 3 else volumes[:, volumes.shape[1] // 2]
