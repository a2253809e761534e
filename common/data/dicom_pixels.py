"""Turning one DICOM dataset into float frames in physical units, plus where each frame lies in space.

Handles what real archives contain: compressed transfer syntaxes (through pydicom's pixel handlers and
pylibjpeg), multi-frame and enhanced multi-frame objects, rescale slope/intercept (also inside functional
groups), MONOCHROME1 (inverted grey scale), palette and RGB/YBR colour (kept as RGB, or converted to luminance).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

COLOUR_INTERPRETATIONS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")


def _functional_group_item(ds: Dataset, sequence: str, frame: int | None = None) -> Dataset | None:
    """First item of ``sequence`` from the per-frame groups (if frame given) or the shared groups."""
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if frame < len(per_frame):
            groups.append(per_frame[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def orientation(ds: Dataset) -> np.ndarray | None:
    """Row and column direction cosines (6,), from the top level or the functional groups."""
    value = ds.get("ImageOrientationPatient")
    if value is None:
        item = _functional_group_item(ds, "PlaneOrientationSequence")
        value = item.get("ImageOrientationPatient") if item is not None else None
    if value is None or len(value) != 6:
        return None
    return np.asarray([float(v) for v in value], dtype=np.float64)


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    value = ds.get("PixelSpacing")
    if value is None:
        item = _functional_group_item(ds, "PixelMeasuresSequence")
        value = item.get("PixelSpacing") if item is not None else None
    if value is None or len(value) != 2:
        return None
    return float(value[0]), float(value[1])


def frame_positions(ds: Dataset) -> list[np.ndarray | None]:
    """ImagePositionPatient of every frame, None where the file does not say."""
    n = number_of_frames(ds)
    if n == 1 and ds.get("ImagePositionPatient") is not None:
        return [np.asarray([float(v) for v in ds.ImagePositionPatient])]
    positions: list[np.ndarray | None] = []
    for i in range(n):
        item = _functional_group_item(ds, "PlanePositionSequence", frame=i)
        value = item.get("ImagePositionPatient") if item is not None else None
        positions.append(np.asarray([float(v) for v in value]) if value is not None else None)
    return positions


def slice_normal(ds: Dataset) -> np.ndarray | None:
    cosines = orientation(ds)
    if cosines is None:
        return None
    normal = np.cross(cosines[:3], cosines[3:])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else None


def _rescale(ds: Dataset, pixels: np.ndarray) -> np.ndarray:
    """Stored values -> physical units (HU for CT) with the modality LUT or slope/intercept."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    item = _functional_group_item(ds, "PixelValueTransformationSequence")
    if item is not None:
        slope = float(item.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(item.get("RescaleIntercept", 0.0) or 0.0)
        return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return pixels.astype(np.float32)


def is_colour(ds: Dataset) -> bool:
    interpretation = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    return interpretation == "PALETTE COLOR" or interpretation in COLOUR_INTERPRETATIONS \
        or int(ds.get("SamplesPerPixel", 1) or 1) == 3


def frames_as_float(ds: Dataset, keep_colour: bool = False) -> tuple[np.ndarray, list[str]]:
    """All frames of ``ds`` as (F, H, W) float32 in physical units, and notes on conversions made.

    Colour (RGB, YBR, palette) becomes (F, H, W, 3) RGB when ``keep_colour``, luminance otherwise.
    Raises whatever the pixel handlers raise (truncated data, missing decoder): the caller reports it.
    """
    notes: list[str] = []
    pixels = ds.pixel_array
    interpretation = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    frames = number_of_frames(ds)
    if is_colour(ds):
        # pydicom converts YBR to RGB by default; luminance weights are ITU-R BT.601 luma.
        rgb = (apply_color_lut(pixels, ds) if interpretation == "PALETTE COLOR" else pixels).astype(np.float32)
        grey_content = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
        if keep_colour and not grey_content:
            values = rgb[None] if frames == 1 and rgb.ndim == 3 else rgb
            if values.ndim != 4 or values.shape[-1] != 3:
                raise ValueError(f"unexpected colour pixel array shape {rgb.shape} for {frames} frame(s)")
            return np.ascontiguousarray(values), notes
        values = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        kind = "palette colour" if interpretation == "PALETTE COLOR" else f"colour ({interpretation})"
        notes.append(f"{kind} stored with grey content: read as grey" if grey_content
                     else f"{kind} converted to grey (luminance)")
    else:
        values = _rescale(ds, pixels)
        if interpretation == "MONOCHROME1":
            values = values.max() + values.min() - values
            notes.append("MONOCHROME1 inverted so that higher values are brighter")
    if frames == 1 and values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ValueError(f"unexpected pixel array shape {values.shape} for {frames} frame(s)")
    return np.ascontiguousarray(values, dtype=np.float32), notes
