"""PNG grids for people to look at: every column says what it shows (a channel, or input / output / baseline),
every row what it is (its class), so a figure can be read without its caption."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .schema import ChannelSchema, Example

MIN_TILE = 96  # pixels: tiles are enlarged (nearest neighbour) to at least this, so a column name fits above them
HEADER, MARGIN, PAD = 28, 6, 2
BACKGROUND, INK, ABSENT = 255, 0, 40


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Two lines at most, cut with '...' when longer than ``width`` pixels."""
    words, lines = text.split(), [""]
    for word in words:
        trial = f"{lines[-1]} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not lines[-1]:
            lines[-1] = trial
        elif len(lines) < 2:
            lines.append(word)
        else:
            lines[-1] += " " + word
    fitted = []
    for line in lines:
        while draw.textlength(line, font=font) > width and len(line) > 3:
            line = line[:-4] + "..."
        fitted.append(line)
    return "\n".join(fitted)


def labelled_grid(rows: list[list[np.ndarray]], columns: list[str], row_labels: list[str], path: str | Path,
                  scale: int = 2) -> Path:
    """Save tiles as one PNG with a header of column names and, when any is given, a column of row labels.

    rows: per row, one tile per column: (H, W) grey or (H, W, 3) RGB, values in [0, 1].
    """
    if not rows:
        raise ValueError("no rows to draw")
    h, w = rows[0][0].shape[:2]
    scale = max(scale, math.ceil(MIN_TILE / w))
    th, tw = h * scale, w * scale
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    label_width = max((int(probe.textlength(t, font=font)) for t in row_labels if t), default=0)
    left = label_width + 2 * MARGIN if label_width else 0
    canvas = Image.new("RGB", (left + len(columns) * (tw + PAD), HEADER + len(rows) * (th + PAD)), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.multiline_text((left + c * (tw + PAD) + 2, 2), _fit(draw, name, font, tw - 4), fill=(INK,) * 3,
                            font=font, spacing=1)
    for r, tiles in enumerate(rows):
        top = HEADER + r * (th + PAD)
        if r < len(row_labels) and row_labels[r]:
            draw.text((MARGIN, top + th // 2 - 6), row_labels[r], fill=(INK,) * 3, font=font)
        for c, tile in enumerate(tiles):
            values = np.clip(np.asarray(tile, dtype=np.float32), 0, 1)
            mode = "RGB" if values.ndim == 3 else "L"
            image = Image.fromarray(np.rint(values * 255).astype(np.uint8), mode).resize((tw, th), Image.NEAREST)
            canvas.paste(image.convert("RGB"), (left + c * (tw + PAD), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def example_tiles(example: Example, schema: ChannelSchema) -> tuple[list[str], list[np.ndarray]]:
    """Column names and [0, 1] tiles of one normalised example ([-1, 1]); a colour image is one RGB tile, an
    absent channel a dark tile; 3D examples show their middle slice."""
    image = example.image[:, example.image.shape[1] // 2] if example.is_3d else example.image
    grouped = {i: group for group in schema.colour_groups for i in group}
    names, tiles = [], []
    for c, channel in enumerate(schema.channels):
        if c in grouped and c != grouped[c][0]:
            continue
        if c in grouped:
            group = grouped[c]
            names.append(" + ".join(schema.channels[i] for i in group) if len(schema.colour_groups) > 1 else "colour")
            tiles.append(np.stack([(image[i] + 1) / 2 if example.available[i] else np.zeros(image.shape[1:])
                                   for i in group], axis=-1))
        else:
            names.append(channel)
            tiles.append((image[c] + 1) / 2 if example.available[c] else np.full(image.shape[1:], ABSENT / 255))
    return names, tiles


def class_label(schema: ChannelSchema, label: int | None) -> str:
    if label is None or label < 0:
        return "no class" if schema.num_classes else ""
    return schema.class_names[label] if label < schema.num_classes else f"class {label}"


def example_grid(examples: list[Example], schema: ChannelSchema, path: str | Path, scale: int = 2) -> Path:
    """One row per example (labelled with its class), one column per channel (named), as a PNG."""
    if not examples:
        raise ValueError("no examples to draw")
    drawn = [example_tiles(e, schema) for e in examples]
    return labelled_grid([tiles for _, tiles in drawn], drawn[0][0],
                         [class_label(schema, e.label) for e in examples], path, scale)
