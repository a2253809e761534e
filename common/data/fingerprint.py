"""The data set fingerprint (the nnU-Net habit): what a site has, what is wrong with it, what to train at.

A site admin runs ``meddiff site check`` before joining a federation; the fingerprint is computed from the
loaded examples only, so it reads nothing beyond the data folder and writes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from .problems import LoadedData

SIZES = (32, 64, 128, 256)
CPU_MAX_SIZE = 64


@dataclass
class ChannelStats:
    name: str
    examples: int
    slices: int
    median_shape: tuple[int, ...]
    median_spacing: tuple[float, ...] | None
    percentiles: tuple[float, float, float] | None  # 0.5, 50, 99.5 for image channels
    label_counts: dict[int, int] | None  # voxels per label for mask channels


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
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    suggested_resolution: int = 64
    suggested_resolution_gpu: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


def _suggest(min_side: float) -> int:
    fitting = [s for s in SIZES if s <= min_side]
    return fitting[-1] if fitting else SIZES[0]


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
        stats.append(ChannelStats(name, len(having), slices, median_shape, median_spacing, percentiles, label_counts))
    class_counts: Counter = Counter()
    for e in data.examples:
        key = schema.class_names[e.label] if e.label is not None and e.label < schema.num_classes \
            else ("unlabelled" if e.label is None else f"class{e.label}")
        class_counts[key] += 1
    ndim = 3 if any(e.is_3d for e in data.examples) else 2
    in_plane = [min(e.image.shape[-2:]) for e in data.examples]
    min_side = float(np.median(in_plane)) if in_plane else 0.0
    gpu = _suggest(min_side)
    return Fingerprint(
        root=data.root, format=data.format,
        patients=len({e.patient for e in data.examples}), studies=len({e.study for e in data.examples}),
        examples=len(data.examples), slices=sum(e.image.shape[1] if e.is_3d else 1 for e in data.examples),
        ndim=ndim, channels=stats, class_counts=dict(class_counts),
        skipped=[str(p) for p in data.skipped], notes=[str(p) for p in data.notes],
        suggested_resolution=min(gpu, CPU_MAX_SIZE), suggested_resolution_gpu=gpu)


def render_fingerprint(fp: Fingerprint, console: Console | None = None) -> None:
    """Print the fingerprint as tables a site admin can read at a glance."""
    console = console or Console()
    summary = Table(title=f"Data set fingerprint: {fp.root}", show_header=False)
    summary.add_row("format", fp.format)
    summary.add_row("patients / studies", f"{fp.patients} / {fp.studies}")
    summary.add_row("examples (volumes or images)", str(fp.examples))
    summary.add_row("slices", str(fp.slices))
    summary.add_row("dimensions", f"{fp.ndim}D")
    summary.add_row("classes", ", ".join(f"{k}: {v}" for k, v in fp.class_counts.items()) or "-")
    summary.add_row("suggested resolution", f"{fp.suggested_resolution} on CPU, {fp.suggested_resolution_gpu} on a GPU")
    summary.add_row("skipped files / notes", f"{len(fp.skipped)} / {len(fp.notes)}")
    console.print(summary)
    table = Table(title="Channels")
    for column in ("channel", "examples", "slices", "median shape", "spacing (mm)", "p0.5 / p50 / p99.5 or labels"):
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
        table.add_row(ch.name, str(ch.examples), str(ch.slices), " x ".join(map(str, ch.median_shape)) or "-",
                      spacing, values)
    console.print(table)
    if fp.skipped or fp.notes:
        problems = Table(title="Problems found")
        problems.add_column("kind")
        problems.add_column("file and reason")
        for line in fp.skipped:
            problems.add_row("[red]skipped[/red]", line.removeprefix("skipped: "))
        for line in fp.notes:
            problems.add_row("[yellow]note[/yellow]", line.removeprefix("note: "))
        console.print(problems)
    else:
        console.print("No problems found.")
