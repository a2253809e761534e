"""DICOM files -> series -> volumes: discovery from headers, slice ordering, geometry checks.

A site's archive export is a folder of studies and series in any layout. Series are found from the headers
(not the folder names); slices are ordered by their position along the slice normal (not by file name) and
converted to physical units. Every file that cannot be used is reported with a reason and the rest still loads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .dicom_pixels import frame_positions, frames_as_float, number_of_frames, orientation, pixel_spacing, slice_normal
from .dicom_series import SeriesFiles
from .problems import DataProblem

NOT_DICOM_SUFFIXES = {".txt", ".csv", ".json", ".md", ".xml", ".html", ".pdf", ".png", ".jpg", ".jpeg",
                      ".nii", ".gz", ".npz", ".npy", ".toml", ".yaml", ".yml", ".zip", ".log"}
POSITION_TOLERANCE_MM = 0.5
ORIENTATION_TOLERANCE = 1e-3


@dataclass
class Volume:
    """One series read into (D, H, W) float32 with its geometry."""

    series: SeriesFiles
    pixels: np.ndarray
    positions: np.ndarray | None  # (D,) position along the slice normal in mm, None when unknown
    orientation: np.ndarray | None
    spacing: tuple[float, ...] | None  # (slice, row, column) in mm


def read_header(path: Path) -> Dataset:
    """Header with large values (pixel data) deferred, so discovery of a large archive stays fast."""
    return pydicom.dcmread(path, defer_size=1024)


def discover_series(files: list[Path], problems: list[DataProblem]) -> list[SeriesFiles]:
    """Group files into volumes by StudyInstanceUID / SeriesInstanceUID; each multi-frame file is its own."""
    groups: dict[tuple[str, str], SeriesFiles] = {}
    for path in files:
        if path.suffix.lower() in NOT_DICOM_SUFFIXES or path.name.upper() == "DICOMDIR":
            continue
        try:
            ds = read_header(path)
        except InvalidDicomError:
            problems.append(DataProblem(str(path), "not a DICOM file (no DICM preamble or header)",
                                        "remove it from the data folder, or re-export it from the PACS"))
            continue
        except PermissionError:
            problems.append(DataProblem(str(path), "cannot read file (permission denied)",
                                        "give the user that runs meddiff read access to it"))
            continue
        except Exception as e:  # pydicom raises many types on damaged headers
            problems.append(DataProblem(str(path), f"damaged DICOM header ({type(e).__name__}: {e})",
                                        "re-export the file from the PACS"))
            continue
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            kind = getattr(ds.get("SOPClassUID"), "name", "") or str(ds.get("Modality", "unknown"))
            problems.append(DataProblem(str(path), f"DICOM object without pixel data ({kind})",
                                        "nothing to do if it is a report or presentation state; it is not an image"))
            continue
        study = str(ds.get("StudyInstanceUID", "") or f"no-study-uid:{path.parent}")
        series = str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{path.parent}")
        if number_of_frames(ds) > 1:
            series = f"{series}/{ds.get('SOPInstanceUID', path.name)}"
        groups.setdefault((study, series), SeriesFiles(study, series)).entries.append((path, ds))
    return list(groups.values())


def _majority(values: list, key) -> object:
    return Counter(key(v) for v in values).most_common(1)[0][0]


def _consistent_entries(series: SeriesFiles, problems: list[DataProblem]) -> list[tuple[Path, Dataset]]:
    """Drop files whose size or orientation differs from most of the series (mixed geometry), reporting each."""
    entries = series.entries
    size = _majority(entries, lambda e: (int(e[1].get("Rows", 0) or 0), int(e[1].get("Columns", 0) or 0)))
    kept = []
    for path, ds in entries:
        this = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        if this != size:
            problems.append(DataProblem(str(path), f"image size {this[0]}x{this[1]} differs from the rest of its "
                                        f"series ({size[0]}x{size[1]}): mixed geometry in one series",
                                        "re-export the series; a series must hold slices of one size"))
            continue
        kept.append((path, ds))
    with_orientation = [(p, d, orientation(d)) for p, d in kept]
    known = [o for _, _, o in with_orientation if o is not None]
    if known:
        ref = _majority(known, lambda o: tuple(np.round(o, 3)))
        ref = np.asarray(ref)
        kept2 = []
        for path, ds, o in with_orientation:
            if o is not None and np.max(np.abs(o - ref)) > 10 * ORIENTATION_TOLERANCE:
                problems.append(DataProblem(str(path), "slice orientation differs from the rest of its series: "
                                            "mixed geometry in one series", "re-export the series"))
                continue
            kept2.append((path, ds))
        kept = kept2
    return kept


Slice = tuple  # (position along the normal in mm or None, instance order, (H, W[, 3]) frame, file)


def _read_slices(entries: list[tuple[Path, Dataset]], keep_colour: bool,
                 problems: list[DataProblem]) -> list[Slice]:
    """Every frame of every readable file, with where it lies; undecodable or non-finite files are reported."""
    slices: list[Slice] = []
    normal = None
    for path, _ in entries:
        try:
            ds = pydicom.dcmread(path)
            frames, notes = frames_as_float(ds, keep_colour=keep_colour)
        except Exception as e:
            problems.append(DataProblem(str(path), f"pixel data cannot be decoded ({type(e).__name__}: {e})",
                                        "the file may be truncated or use an unsupported compression; re-export it "
                                        "uncompressed"))
            continue
        if not np.isfinite(frames).all():
            problems.append(DataProblem(str(path), "pixel data contains NaN or infinite values",
                                        "re-export or fix the file"))
            continue
        problems.extend(DataProblem(str(path), note, skipped=False) for note in notes)
        normal = normal if normal is not None else slice_normal(ds)
        positions = frame_positions(ds)
        instance = int(ds.get("InstanceNumber", 0) or 0)
        for i, frame in enumerate(frames):
            pos = positions[i] if i < len(positions) else None
            along = float(np.dot(pos, normal)) if pos is not None and normal is not None else None
            slices.append((along, instance * 10_000 + i, frame, path))
    return slices


def _order_slices(slices: list[Slice], series: SeriesFiles,
                  problems: list[DataProblem]) -> tuple[list[Slice], np.ndarray | None]:
    """Slices sorted along the slice normal (duplicates reported), or by InstanceNumber without positions."""
    if any(s[0] is None for s in slices):
        if len(slices) > 1:
            problems.append(DataProblem(series.folder, f"series '{series.description}' has no slice positions; "
                                        "slices ordered by InstanceNumber", skipped=False))
        return sorted(slices, key=lambda s: s[1]), None
    ordered = sorted(slices, key=lambda s: s[0])
    kept = [ordered[0]]
    for s in ordered[1:]:
        if abs(s[0] - kept[-1][0]) < 1e-3:
            problems.append(DataProblem(str(s[3]), f"duplicate slice position {s[0]:.2f} mm in series "
                                        f"'{series.description}'; kept {kept[-1][3].name}", "remove the duplicate file"))
            continue
        kept.append(s)
    return kept, np.asarray([s[0] for s in kept])


def read_volume(series: SeriesFiles, problems: list[DataProblem], keep_colour: bool = False) -> Volume | None:
    """Read and order the slices of one series: (D, H, W), or (D, H, W, 3) for colour kept as colour.
    Bad files are reported and left out, not raised."""
    slices = _read_slices(_consistent_entries(series, problems), keep_colour, problems)
    if not slices:
        return None
    slices, positions = _order_slices(slices, series, problems)
    pixels = np.stack([s[2] for s in slices])
    in_plane = pixel_spacing(series.first)
    gaps = np.diff(positions) if positions is not None and len(positions) > 1 else None
    through = float(np.median(gaps)) if gaps is not None else float(series.first.get("SliceThickness", 0) or 0)
    spacing = (through, *in_plane) if in_plane else None
    return Volume(series, pixels, positions, orientation(series.first), spacing)


def geometry_mismatch(volume: Volume, reference: Volume) -> str | None:
    """Why ``volume`` cannot be stacked with ``reference`` (shape, orientation, slice positions), or None."""
    if volume.pixels.shape[:3] != reference.pixels.shape[:3]:
        return f"shape {volume.pixels.shape[:3]} differs from the study's {reference.pixels.shape[:3]}"
    if volume.orientation is not None and reference.orientation is not None:
        if np.max(np.abs(volume.orientation - reference.orientation)) > 10 * ORIENTATION_TOLERANCE:
            return "slice orientation differs from the study's other channels"
    if volume.positions is not None and reference.positions is not None:
        offset = float(np.max(np.abs(volume.positions - reference.positions)))
        if offset > POSITION_TOLERANCE_MM:
            return f"slice positions differ from the study's other channels by up to {offset:.1f} mm"
    return None
