"""DICOM folders -> studies in the channel schema.

A site's archive export is a folder of studies and series in any layout. We discover series from the
headers (not the folder names), map each series to a channel with the site's rules, order slices by their
position along the slice normal (not by file name), convert pixels to physical units, and check that the
channels of one study share geometry before stacking them. Every file that cannot be used is reported with a
reason; the rest of the archive still loads.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ..config import ChannelRule, DataConfig
from ..schema import ChannelSchema, Example
from .dicom_pixels import frame_positions, frames_as_float, number_of_frames, orientation, pixel_spacing, slice_normal
from .files import require_path, walk_files
from .masks import to_labels
from .problems import DataError, DataProblem, LoadedData

log = logging.getLogger(__name__)

NOT_DICOM_SUFFIXES = {".txt", ".csv", ".json", ".md", ".xml", ".html", ".pdf", ".png", ".jpg", ".jpeg",
                      ".nii", ".gz", ".npz", ".npy", ".toml", ".yaml", ".yml", ".zip", ".log"}
CANONICAL_ORDER = ("t1pre", "t1", "t1post", "t2", "flair", "pd", "ct", "xray", "us", "image")
POSITION_TOLERANCE_MM = 0.5
ORIENTATION_TOLERANCE = 1e-3


@dataclass
class SeriesFiles:
    """Headers of the files that make one volume: a series of single-frame files, or one multi-frame file."""

    study_uid: str
    series_uid: str
    entries: list[tuple[Path, Dataset]] = field(default_factory=list)

    @property
    def first(self) -> Dataset:
        return self.entries[0][1]

    @property
    def description(self) -> str:
        return str(self.first.get("SeriesDescription", "") or "")

    @property
    def folder(self) -> str:
        """Where the series lies: its folder, or the file itself for a one-file series."""
        if len(self.entries) == 1:
            return str(self.entries[0][0])
        return os.path.commonpath([str(p.parent) for p, _ in self.entries])


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


def match_channel(series: SeriesFiles, rules: tuple[ChannelRule, ...]) -> str | None:
    """The channel of the first rule whose pattern is found in the series' header field."""
    for rule in rules:
        value = str(series.first.get(rule.field, "") or "")
        if re.search(rule.pattern, value, flags=re.IGNORECASE):
            return rule.channel
    return None


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


def read_volume(series: SeriesFiles, problems: list[DataProblem]) -> Volume | None:
    """Read and order the slices of one series. Bad files are reported and left out, not raised."""
    entries = _consistent_entries(series, problems)
    slices: list[tuple[float | None, int, np.ndarray, Path]] = []
    normal = None
    for path, header in entries:
        try:
            ds = pydicom.dcmread(path)
            frames, notes = frames_as_float(ds)
        except Exception as e:
            problems.append(DataProblem(str(path), f"pixel data cannot be decoded ({type(e).__name__}: {e})",
                                        "the file may be truncated or use an unsupported compression; re-export it "
                                        "uncompressed"))
            continue
        if not np.isfinite(frames).all():
            problems.append(DataProblem(str(path), "pixel data contains NaN or infinite values",
                                        "re-export or fix the file"))
            continue
        for note in notes:
            problems.append(DataProblem(str(path), note, skipped=False))
        normal = normal if normal is not None else slice_normal(ds)
        positions = frame_positions(ds)
        instance = int(ds.get("InstanceNumber", 0) or 0)
        for i, frame in enumerate(frames):
            pos = positions[i] if i < len(positions) else None
            along = float(np.dot(pos, normal)) if pos is not None and normal is not None else None
            slices.append((along, instance * 10_000 + i, frame, path))
    if not slices:
        return None
    if all(s[0] is not None for s in slices):
        slices.sort(key=lambda s: s[0])
        kept = [slices[0]]
        for s in slices[1:]:
            if abs(s[0] - kept[-1][0]) < 1e-3:
                problems.append(DataProblem(str(s[3]), f"duplicate slice position {s[0]:.2f} mm in series "
                                            f"'{series.description}'; kept {kept[-1][3].name}",
                                            "remove the duplicate file"))
                continue
            kept.append(s)
        slices = kept
        positions = np.asarray([s[0] for s in slices])
    else:
        slices.sort(key=lambda s: s[1])
        positions = None
        if len(slices) > 1:
                problems.append(DataProblem(series.folder, f"series '{series.description}' has no slice positions; "
                                        "slices ordered by InstanceNumber", skipped=False))
    pixels = np.stack([s[2] for s in slices])
    in_plane = pixel_spacing(series.first)
    gaps = np.diff(positions) if positions is not None and len(positions) > 1 else None
    through = float(np.median(gaps)) if gaps is not None else float(series.first.get("SliceThickness", 0) or 0)
    spacing = (through, *in_plane) if in_plane else None
    return Volume(series, pixels, positions, orientation(series.first), spacing)


def _geometry_mismatch(volume: Volume, reference: Volume) -> str | None:
    if volume.pixels.shape != reference.pixels.shape:
        return f"shape {volume.pixels.shape} differs from the study's {reference.pixels.shape}"
    if volume.orientation is not None and reference.orientation is not None:
        if np.max(np.abs(volume.orientation - reference.orientation)) > 10 * ORIENTATION_TOLERANCE:
            return "slice orientation differs from the study's other channels"
    if volume.positions is not None and reference.positions is not None:
        offset = float(np.max(np.abs(volume.positions - reference.positions)))
        if offset > POSITION_TOLERANCE_MM:
            return f"slice positions differ from the study's other channels by up to {offset:.1f} mm"
    return None


def channel_order(channels: set[str]) -> tuple[str, ...]:
    images = [c for c in CANONICAL_ORDER if c in channels]
    images += sorted(c for c in channels if c not in CANONICAL_ORDER and not c.startswith("mask"))
    masks = sorted(c for c in channels if c.startswith("mask"))
    return tuple(images + masks)


def assemble_study(volumes: dict[str, list[Volume]], schema: ChannelSchema, config: DataConfig,
                   problems: list[DataProblem]) -> Example | None:
    """Stack one study's channels into an Example after checking they share geometry."""
    chosen: dict[str, Volume] = {}
    for channel, candidates in volumes.items():
        candidates = sorted(candidates, key=lambda v: -v.pixels.shape[0])
        chosen[channel] = candidates[0]
        for other in candidates[1:]:
            problems.append(DataProblem(other.series.folder, f"second series '{other.series.description}' maps to "
                                        f"channel {channel}; kept '{candidates[0].series.description}'",
                                        "make the [[data.dicom_rules]] pattern for this channel more specific"))
    images = [v for c, v in chosen.items() if not schema.is_mask(c)] or list(chosen.values())
    reference = Counter(v.pixels.shape for v in images).most_common(1)[0][0]
    reference_volume = next(v for v in images if v.pixels.shape == reference)
    image = np.zeros((schema.num_channels, *reference), dtype=np.float32)
    available = np.zeros(schema.num_channels, dtype=bool)
    for channel, volume in chosen.items():
        mismatch = _geometry_mismatch(volume, reference_volume)
        if mismatch:
            problems.append(DataProblem(volume.series.folder, f"channel {channel} ('{volume.series.description}'): "
                                        f"{mismatch}", "register/resample this series to the study's other series"))
            continue
        values = volume.pixels
        if schema.is_mask(channel):
            values = to_labels(values, config.mask_values, binary_default=values.max() > 1 and len(np.unique(values)) == 2)
        image[schema.index(channel)] = values
        available[schema.index(channel)] = True
    if not available.any():
        return None
    first = reference_volume.series.first
    folders = [v.series.folder for v in chosen.values()]
    return Example(
        image=image, available=available, label=None,
        patient=str(first.get("PatientID", "") or reference_volume.series.study_uid),
        study=reference_volume.series.study_uid,
        source=os.path.commonpath(folders) if len(folders) > 1 else folders[0],
        spacing=reference_volume.spacing,
        meta={"study_date": str(first.get("StudyDate", "")), "modality": str(first.get("Modality", "")),
              "series": {c: v.series.description for c, v in chosen.items()},
              "slice_positions": None if reference_volume.positions is None
              else reference_volume.positions.tolist()},
    )


def load_dicom(root: str | Path, config: DataConfig) -> LoadedData:
    """Every study under ``root`` as one (C, D, H, W) example; problems listed, never raised per file."""
    root = require_path(root)
    problems: list[DataProblem] = []
    files = walk_files(root, problems) if root.is_dir() else [root]
    series_list = discover_series(files, problems)
    if not series_list:
        raise DataError(root, "no readable DICOM image found" + (f" ({len(problems)} file(s) skipped)" if problems
                                                                  else " (the folder is empty)"),
                        "point meddiff at the folder that holds the exported DICOM series")
    by_study: dict[str, dict[str, list[SeriesFiles]]] = defaultdict(lambda: defaultdict(list))
    for series in series_list:
        channel = match_channel(series, config.dicom_rules)
        if channel is None or (config.channels and channel not in config.channels):
            problems.append(DataProblem(series.folder, f"no channel rule matches series '{series.description}' "
                                        f"(Modality {series.first.get('Modality', '?')}); "
                                        f"{len(series.entries)} file(s) not used",
                                        "add a [[data.dicom_rules]] entry in site.toml if this series is wanted"))
            continue
        by_study[series.study_uid][channel].append(series)
    channels = config.channels or channel_order({c for study in by_study.values() for c in study})
    schema = ChannelSchema(channels, config.class_names, max(1, len(config.mask_values)))
    result = LoadedData(schema, root=str(root), format="dicom", problems=problems)
    for study_uid in sorted(by_study):
        volumes: dict[str, list[Volume]] = defaultdict(list)
        for channel, series_group in by_study[study_uid].items():
            for series in series_group:
                try:
                    volume = read_volume(series, problems)
                except Exception as e:  # one odd series must never stop the whole archive
                    log.exception("unexpected error reading series %s", series.folder)
                    problems.append(DataProblem(series.folder, f"series '{series.description}' could not be read "
                                                f"({type(e).__name__}: {e})", "re-export the series; report this "
                                                "file to the meddiff maintainers if it opens in a DICOM viewer"))
                    continue
                if volume is not None:
                    volumes[channel].append(volume)
        if not volumes:
            continue
        example = assemble_study(volumes, schema, config, problems)
        if example is not None:
            result.examples.append(example)
    if schema.mask_indices and result.examples:
        top = max(int(e.image[list(schema.mask_indices)].max()) for e in result.examples)
        result.schema = ChannelSchema(schema.channels, schema.class_names, max(schema.mask_labels, top, 1))
    return result
