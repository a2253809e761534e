"""DICOM folders -> studies in the channel schema.

Series are discovered from the headers (dicom_volume.py), mapped to channels by the site's rules and the
documented specificity score (dicom_series.py), read into volumes, checked for plausible intensities, and stacked
per study after checking that the channels share geometry. Every series or file that is not used is reported
with a reason; the rest of the archive still loads.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict

import numpy as np

from ..config import DataConfig
from ..plan import channel_order
from ..schema import ChannelSchema, Example, colour_channel_names
from .dicom_series import Candidate, SeriesFiles, candidate_for, ranked_candidates, report_not_chosen
from .dicom_suggest import rules_block
from .dicom_volume import Volume, discover_series, geometry_mismatch, read_volume
from .files import require_path, walk_files
from .masks import to_labels
from .problems import DataError, DataProblem, LoadedData

log = logging.getLogger(__name__)

MR_MAGNITUDE = re.compile(r"^(t1|t2|flair|pd|dwi|swi)")
CT_MAX_HU = 4000.0  # p99.5 above this is beyond metal; below, anything goes (padding outside the FOV: -2048, -3995 ...)
CT_AIR_HU = -100.0  # a CT slice holds air or fat somewhere: p0.5 above this means the values are not HU


def implausible_intensities(channel: str, values: np.ndarray) -> str | None:
    """Why a volume's values do not fit its channel name (signed MR magnitude, CT outside HU), or None."""
    sample = values.ravel()[:: max(1, values.size // 200_000)]
    low, middle, high = (float(v) for v in np.percentile(sample, [0.5, 50, 99.5]))
    if MR_MAGNITUDE.match(channel) and low < 0 and -low > 0.02 * max(abs(high), 1e-6):
        return (f"signed intensities (p0.5 = {low:.5g}, p99.5 = {high:.5g}) unlike an MR magnitude image: a "
                "subtraction, difference or phase map?")
    if channel == "ct" and (low > CT_AIR_HU or high > CT_MAX_HU or not -1100 <= middle <= 2000):
        return (f"values p0.5 = {low:.5g}, p50 = {middle:.5g}, p99.5 = {high:.5g} are not Hounsfield units (air is "
                "about -1000, soft tissue 0 to 100, bone up to about 3000): no rescale intercept, or not a CT image?")
    return None


def map_series(series_list: list[SeriesFiles], config: DataConfig,
               problems: list[DataProblem]) -> dict[str, dict[str, list[Candidate]]]:
    """{study: {channel: its candidate series, best first}}; series that fit no channel are reported."""
    candidates: dict[str, dict[str, list[Candidate]]] = defaultdict(lambda: defaultdict(list))
    for series in series_list:
        found = candidate_for(series, config.dicom_rules, config.channels, problems)
        if found is not None:
            candidates[series.study_uid][found[0]].append(found[1])
    mapped: dict[str, dict[str, list[Candidate]]] = {}
    for study in sorted(candidates):
        for channel, options in candidates[study].items():
            ranked = ranked_candidates(channel, options, problems)
            if ranked:
                mapped.setdefault(study, {})[channel] = ranked
    return mapped


def read_channel(channel: str, series: SeriesFiles, config: DataConfig, problems: list[DataProblem]) -> Volume | None:
    """One candidate series read into a volume, or None with the reason reported (unreadable, implausible)."""
    try:
        volume = read_volume(series, problems, keep_colour=config.colour == "rgb" and not channel.startswith("mask"))
    except Exception as e:  # one odd series must never stop the whole archive
        log.exception("unexpected error reading series %s", series.folder)
        problems.append(DataProblem(series.folder, f"series {series.label()} could not be read ({type(e).__name__}: "
                                    f"{e})", "re-export the series; report this file to the meddiff maintainers "
                                    "if it opens in a DICOM viewer"))
        return None
    reason = implausible_intensities(channel, volume.pixels) if volume is not None and config.check_intensities \
        else None
    if reason:
        problems.append(DataProblem(series.folder, f"channel {channel}, series {series.label()}: {reason}; left out",
                                    f"check that this series really is {channel}; if it is, set [data] "
                                    "check_intensities = false in site.toml"))
        return None
    return volume


def read_study(channels: dict[str, list[Candidate]], config: DataConfig,
               problems: list[DataProblem]) -> dict[str, Volume]:
    """Per channel, the best candidate that reads and looks like its channel; the others are reported."""
    volumes = {}
    for channel, ranked in channels.items():
        for position, candidate in enumerate(ranked):
            volume = read_channel(channel, candidate.series, config, problems)
            if volume is not None:
                volumes[channel] = volume
                report_not_chosen(channel, candidate, ranked[position + 1:], problems)  # failed ones said why
                break
    return volumes


def _reference(volumes: dict[str, Volume]) -> Volume:
    """The volume the others must match: the image channel with most slices (then in canonical order)."""
    images = {c: v for c, v in volumes.items() if not c.startswith("mask")} or volumes
    order = channel_order(set(images))
    return images[min(images, key=lambda c: (-images[c].pixels.shape[0], order.index(c)))]


def assemble_study(volumes: dict[str, Volume], schema: ChannelSchema, config: DataConfig,
                   problems: list[DataProblem]) -> Example | None:
    """Stack one study's channels into an Example after checking they share geometry."""
    reference = _reference(volumes)
    image = np.zeros((schema.num_channels, *reference.pixels.shape[:3]), dtype=np.float32)
    available = np.zeros(schema.num_channels, dtype=bool)
    used = {}
    for channel, volume in volumes.items():
        mismatch = geometry_mismatch(volume, reference)
        if mismatch:
            problems.append(DataProblem(volume.series.folder, f"channel {channel} ('{volume.series.description}'): "
                                        f"{mismatch}", "register/resample this series to the study's other series"))
            continue
        values = volume.pixels
        if channel.startswith("mask"):
            values = to_labels(values, config.mask_values,
                               binary_default=values.max() > 1 and len(np.unique(values)) == 2)
        names = colour_channel_names(channel) if channel not in schema.channels else (channel,)
        planes = np.moveaxis(values, -1, 0) if values.ndim == 4 else [values] * len(names)
        for name, plane in zip(names, planes):
            image[schema.index(name)], available[schema.index(name)] = plane, True
            used[name] = volume
    if not used:
        return None
    first = reference.series.first
    folders = sorted({v.series.folder for v in used.values()})
    return Example(
        image=image, available=available, label=None,
        patient=str(first.get("PatientID", "") or reference.series.study_uid), study=reference.series.study_uid,
        source=os.path.commonpath(folders) if len(folders) > 1 else folders[0], spacing=reference.spacing,
        meta={"study_date": str(first.get("StudyDate", "")), "modality": str(first.get("Modality", "")),
              "series": {c: v.series.description for c, v in used.items()},
              "slice_positions": None if reference.positions is None else reference.positions.tolist()})


def schema_channels(studies: list[dict[str, Volume]], config: DataConfig) -> tuple[str, ...]:
    """The schema's channels: the configured ones, or those found in canonical order; a channel read in colour
    becomes its three colour channels."""
    found = config.channels or tuple(channel_order({c for study in studies for c in study}))
    colour = {c for study in studies for c, v in study.items() if v.pixels.ndim == 4}
    return tuple(name for c in found for name in (colour_channel_names(c) if c in colour else (c,)))


def load_dicom(root, config: DataConfig) -> LoadedData:
    """Every study under ``root`` as one (C, D, H, W) example; problems listed, never raised per file."""
    root = require_path(root)
    problems: list[DataProblem] = []
    files = walk_files(root, problems) if root.is_dir() else [root]
    series_list = discover_series(files, problems)
    if not series_list:
        raise DataError(root, "no readable DICOM image found" + (f" ({len(problems)} file(s) skipped)" if problems
                                                                  else " (the folder is empty)"),
                        "point meddiff at the folder that holds the exported DICOM series")
    mapped = map_series(series_list, config, problems)
    if not mapped:
        raise DataError(root, f"none of the {len(series_list)} series found can form a channel (`meddiff site "
                        "check` lists each)", "add [[data.dicom_rules]] entries to site.toml, for example these "
                        "built from the series found:\n" + rules_block(series_list), problems)
    studies = {study: read_study(series, config, problems) for study, series in mapped.items()}
    studies = {study: volumes for study, volumes in studies.items() if volumes}
    if not studies:
        raise DataError(root, f"no series mapped to a channel could be used ({len(problems)} problems; `meddiff "
                        "site check` lists each)", "fix or re-export the series listed, or adjust "
                        "[[data.dicom_rules]] in site.toml", problems)
    channels = schema_channels(list(studies.values()), config)
    schema = ChannelSchema(channels, config.class_names, max(1, len(config.mask_values)))
    result = LoadedData(schema, root=str(root), format="dicom", problems=problems,
                        patient_ids="DICOM PatientID (the study UID where it is empty)")
    for study in sorted(studies):
        example = assemble_study(studies[study], schema, config, problems)
        if example is not None:
            result.examples.append(example)
    if schema.mask_indices and result.examples:
        top = max(int(e.image[list(schema.mask_indices)].max()) for e in result.examples)
        result.schema = ChannelSchema(schema.channels, schema.class_names, max(schema.mask_labels, top, 1))
    return result
