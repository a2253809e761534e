"""PNG grids of examples (one row per example, one column per channel) for people to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .schema import ChannelSchema, Example


def example_grid(examples: list[Example], schema: ChannelSchema, path: str | Path, scale: int = 2) -> Path:
    """Save normalised examples ([-1, 1]) as a grey PNG grid; 3D examples show their middle slice."""
    if not examples:
        raise ValueError("no examples to draw")
    rows = []
    for example in examples:
        image = example.image[:, example.image.shape[1] // 2] if example.is_3d else example.image
        tiles = [np.clip((image[c] + 1.0) * 127.5, 0, 255) if example.available[c]
                 else np.full(image.shape[1:], 40.0) for c in range(schema.num_channels)]
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)
    return path
