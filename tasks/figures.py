"""PNG panels of task results: one row per example, one column per image (input, output, map, truth ...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def panel(columns: dict[str, torch.Tensor], path: str | Path, rows: int = 8, scale: int = 2) -> Path:
    """Save columns of (N, H, W) images in [0, 1] (maps are scaled by their own 99th percentile) as a grey PNG.

    The column names go into the file's PNG text metadata ("columns"), left to right."""
    tiles = []
    for name, images in columns.items():
        values = images[:rows].float().numpy()
        if name.endswith("map"):
            values = values / max(float(np.percentile(values, 99)), 1e-6)
        tiles.append(np.clip(values, 0, 1))
    grid = np.concatenate([np.concatenate([t[i] for t in tiles], axis=1) for i in range(len(tiles[0]))], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("columns", ", ".join(columns))
    image = Image.fromarray((grid * 255).astype(np.uint8))
    image.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path, pnginfo=info)
    return path


def first_image_channel(images: torch.Tensor, have: torch.Tensor) -> torch.Tensor:
    """(N, H, W): each example's first available image channel (middle slice of 3D), for panels."""
    index = have.float().argmax(dim=1)
    return middle_slice(images[torch.arange(images.shape[0]), index])


def middle_slice(volumes: torch.Tensor) -> torch.Tensor:
    """(N, H, W) for a panel: 2D images as they are, 3D (N, D, H, W) by their middle slice."""
    return volumes if volumes.dim() == 3 else volumes[:, volumes.shape[1] // 2]
