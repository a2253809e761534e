"""The data set fingerprint (the nnU-Net habit): what a site has, what is wrong with it, what to train at.

A site admin runs ``meddiff site check`` before joining a federation; the fingerprint is computed from the
loaded examples only, so it reads nothing beyond the data folder and writes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
from rich.table import Table
from rich.text import Text

from ..config import PrivacyConfig
from ..plan import suggested_depth, suggested_resolution, suggested_space
from .problems import DataProblem, LoadedData
from ..console import plain_console
from rich.console import Console



@dataclass
class ChannelStats:
    name: str
    examples: int
    slices: int
    median_shape: tuple[int, ...]
    median_spacing: tuple[float, ...] | None
    percentiles: tuple[float, float, float] | None  # 0.5, 50, 99.5 for image channels
    label_counts: dict[int, int] | None  # voxels per label for mask channels
    series: list[str] = field(default_factory=list)  # DICOM: the series descriptions mapped to this channel


@dataclass
class Fingerprint:
    root: str
    format: str
    patients: int
    studies: int
    examples: int
    slices: int
    ndim: int
    channels: list[ChannelStats]
    class_counts: dict[str, int]
    class_names: list[str] = field(default_factory=list)  # the schema's, in label order
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    suggested_resolution: int = 0
    suggested_resolution_gpu: int = 0
    suggested_space: str = ""  # pixel or latent diffusion on a CPU (plan.suggested_space), and why
    space_reason: str = ""
    latent_resolution: int = 0  # the size a latent model is planned at (the pixel size where none is suggested)
    median_slices: float = 0.0  # volumes only
    suggested_depth: int = 0  # volumes: [data] depth for a 3D model at the planned size (0: cubes lose little)
    depth_advice: str = ""  # volumes: why that depth
    colour: str = ""  # e.g. "colour (RGB: red, green, blue)"; empty for grey images
    patient_ids: str = ""  # where patient ids come from; "" = the data names no patients (DP per example)

    def to_dict(self) -> dict:
        return asdict(self)


def compute_fingerprint(data: LoadedData, sample_voxels: int = 200_000, seed: int = 0) -> Fingerprint:
    rng = np.random.default_rng(seed)
    schema = data.schema
    stats = []
    for c, name in enumerate(schema.channels):
        having = [e for e in data.examples if e.available[c]]
        shapes = [e.image.shape[1:] for e in having]
        median_shape = tuple(int(v) for v in np.median(np.asarray(shapes), axis=0)) if shapes else ()
        spacings = [e.spacing for e in having if e.spacing]
        median_spacing = tuple(round(float(v), 3) for v in np.median(np.asarray(spacings), axis=0)) \
            if spacings and len({len(s) for s in spacings}) == 1 else None
        slices = sum(e.image.shape[1] if e.is_3d else 1 for e in having)
        percentiles = label_counts = None
        if having and schema.is_mask(name):
            counts: Counter = Counter()
            for e in having:
                values, n = np.unique(np.rint(e.image[c]).astype(np.int64), return_counts=True)
                counts.update(dict(zip(values.tolist(), n.tolist())))
            label_counts = dict(sorted(counts.items()))
        elif having:
            per_example = max(1, sample_voxels // len(having))
            sample = np.concatenate([rng.choice(e.image[c].ravel(), min(per_example, e.image[c].size), replace=False)
                                     for e in having])
            percentiles = tuple(float(v) for v in np.percentile(sample, [0.5, 50, 99.5]))
        series = Counter(e.meta["series"][name] for e in having if name in (e.meta.get("series") or {}))
        stats.append(ChannelStats(name, len(having), slices, median_shape, median_spacing, percentiles, label_counts,
                                  [s for s, _ in series.most_common()]))
    class_counts: Counter = Counter()
    for e in data.examples:
        key = schema.class_names[e.label] if e.label is not None and e.label < schema.num_classes \
            else ("unlabelled" if e.label is None else f"class{e.label}")
        class_counts[key] += 1
    ndim = 3 if any(e.is_3d for e in data.examples) else 2
    in_plane = [min(e.image.shape[-2:]) for e in data.examples]
    min_side = float(np.median(in_plane)) if in_plane else 0.0
    space, space_size, reason = suggested_space(min_side, ndim, gpu=False)
    slices = [e.image.shape[1] for e in data.examples if e.is_3d]
    median_slices = float(np.median(slices)) if slices else 0.0
    return Fingerprint(
        root=data.root, format=data.format, patient_ids=data.patient_ids,
        patients=len({e.patient for e in data.examples}), studies=len({e.study for e in data.examples}),
        examples=len(data.examples), slices=sum(e.image.shape[1] if e.is_3d else 1 for e in data.examples),
        ndim=ndim, channels=stats, class_counts=dict(class_counts), class_names=list(schema.class_names),
        skipped=[str(p) for p in data.skipped], notes=[str(p) for p in data.notes],
        suggested_resolution=suggested_resolution(min_side, gpu=False),
        suggested_resolution_gpu=suggested_resolution(min_side, gpu=True),
        suggested_space=space, space_reason=reason,
        latent_resolution=space_size if space == "latent" else suggested_resolution(min_side, gpu=False),
        median_slices=median_slices, suggested_depth=suggested_depth(median_slices, space_size),
        depth_advice=_depth_advice(median_slices, space_size),
        colour=", ".join(f"colour (RGB: {', '.join(schema.channels[i] for i in group)})"
                         for group in schema.colour_groups))


def _depth_advice(slices: float, size: int) -> str:
    """What a 3D model of these volumes should set as ``[data] depth`` at the planned in-plane ``size``."""
    if not slices:
        return ""
    depth = suggested_depth(slices, size)
    if not depth:
        return f"median {slices:g} slices: cubes of {size} keep them (no [data] depth needed)"
    return (f"median {slices:g} slices: set [data] depth = {depth} so that they are not resized to {size} "
            "(docs/data.md)")


def render_fingerprint(fp: Fingerprint, console: Console | None = None) -> None:
    """Print the fingerprint as tables a site admin can read at a glance."""
    console = console or plain_console()
    summary = Table(title=f"Data set fingerprint: {fp.root}", show_header=False)
    summary.add_row("format", fp.format)
    summary.add_row("images", fp.colour or "grey")
    summary.add_row("patients / studies", f"{fp.patients} / {fp.studies}" if fp.patient_ids else
                    f"no patient ids ({fp.studies} studies)")
    summary.add_row("DP unit (when [privacy] is on)", f"patient (ids: {fp.patient_ids})" if fp.patient_ids else
                    "example: the data names no patients, each image counts as its own unit")
    units, kind = (fp.patients, "patients") if fp.patient_ids else (fp.examples, "examples")
    default = PrivacyConfig()
    summary.add_row("DP delta (default 1 / (10 N))", default.weak_delta(units, kind)
                    or f"{default.delta_for(units):.2g} for N = {units} {kind}")
    summary.add_row("examples (volumes or images)", str(fp.examples))
    summary.add_row("slices", str(fp.slices))
    summary.add_row("dimensions", f"{fp.ndim}D")
    summary.add_row("classes", ", ".join(f"{k}: {v}" for k, v in fp.class_counts.items()) or "-")
    summary.add_row("suggested resolution", f"{fp.suggested_resolution} on CPU, {fp.suggested_resolution_gpu} on a GPU")
    if fp.suggested_space:
        summary.add_row("suggested model (CPU)", f"{fp.suggested_space} diffusion: {fp.space_reason}")
    if fp.depth_advice:
        summary.add_row("depth of a 3D model", fp.depth_advice)
    summary.add_row("skipped files / notes", f"{len(fp.skipped)} / {len(fp.notes)}")
    console.print(summary)
    console.print(channel_table(fp))
    if fp.skipped or fp.notes:
        problem_table(fp.skipped, fp.notes, console)
    else:
        console.print("No problems found.")


def channel_table(fp: Fingerprint) -> Table:
    table = Table(title="Channels")
    columns = ["channel", "examples", "slices", "median shape", "spacing (mm)", "p0.5 / p50 / p99.5 or labels"]
    with_series = any(ch.series for ch in fp.channels)
    for column in columns + (["DICOM series"] if with_series else []):
        table.add_column(column)
    for ch in fp.channels:
        if ch.percentiles:
            values = " / ".join(f"{v:.4g}" for v in ch.percentiles)
        elif ch.label_counts:
            total = sum(ch.label_counts.values())
            values = ", ".join(f"{k}: {100 * v / total:.2f}%" for k, v in ch.label_counts.items())
        else:
            values = "-"
        spacing = " x ".join(f"{s:g}" for s in ch.median_spacing) if ch.median_spacing else "-"
        row = [ch.name, str(ch.examples), str(ch.slices), " x ".join(map(str, ch.median_shape)) or "-", spacing,
               values]
        table.add_row(*row, *([", ".join(f"'{s}'" for s in ch.series) or "-"] if with_series else []))
    return table


def problem_table(skipped: list[str], notes: list[str], console: Console) -> None:
    problems = Table(title="Problems found")
    problems.add_column("kind")
    problems.add_column("file and reason")
    for line in skipped:
        problems.add_row(Text("skipped", style="red"), line.removeprefix("skipped: "))
    for line in notes:
        problems.add_row(Text("note", style="yellow"), line.removeprefix("note: "))
    console.print(problems)


def render_problems(problems: list[DataProblem], console: Console) -> None:
    """The problems met by a load that produced nothing (site check shows them before the error)."""
    if problems:
        problem_table([str(p) for p in problems if p.skipped], [str(p) for p in problems if not p.skipped], console)
