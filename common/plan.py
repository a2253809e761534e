"""From the sites' data fingerprints to one saved plan (nnU-Net's habit): resolution, channels, classes, network
size and batch, chosen once, written as a federation.toml that training, the federation and the tasks read.

A site admin never needs to know what a noise schedule is; the coordinator collects each site's
``meddiff site check DATA --json fingerprint.json`` (counts, shapes and intensity percentiles, no images) and runs
``meddiff plan``. The defaults of the whole product for resolution live here, once.
"""

from __future__ import annotations

import math

import json
from dataclasses import dataclass
from pathlib import Path

SIZES = (32, 64, 128, 256)  # resolutions a plan chooses from
CPU_MAX_RESOLUTION = 64  # above this a 2-core CPU trains too slowly to be useful
DEFAULT_RESOLUTION = 64  # a federation.toml without [schema] resolution
PHANTOM_RESOLUTION = 32  # the built-in phantom trains in minutes on a 2-core CPU at this size
CANONICAL_ORDER = ("t1pre", "t1", "t1post", "t2", "flair", "pd", "ct", "xray", "us", "image", "red", "green", "blue")
# network widths and batch by resolution: the small model trains on a CPU; larger images need a GPU's width
NETWORKS = {32: ((32, 64, 64), 16), 64: ((32, 64, 64), 16), 128: ((64, 128, 128), 8), 256: ((64, 128, 256), 4)}


def suggested_resolution(min_side: float, gpu: bool) -> int:
    """The largest planned size not above the images' own (median) shorter side; 64 at most on a CPU."""
    fitting = [s for s in SIZES if s <= min_side] or [SIZES[0]]
    return fitting[-1] if gpu else min(fitting[-1], CPU_MAX_RESOLUTION)


LATENT_FACTOR = 4  # the default autoencoder (16, 32, 64) shrinks each side by 4 (common/latent/)
# the largest size a pixel model is planned at, by (dimension, GPU): 2D 64 px on a 2-core CPU (docs/RESULTS.md),
# 3D 16^3 (benchmarks/hippocampus_3d.py)
PIXEL_LIMIT = {(2, False): CPU_MAX_RESOLUTION, (3, False): 16, (2, True): SIZES[-1], (3, True): 32}


DEPTH_STEP = 16  # the default autoencoder (x4) and a 3-level UNet (x4) halve a volume's side 4 times in all


def suggested_depth(slices: float, size: int) -> int:
    """``[data] depth`` for volumes of this (median) number of slices at in-plane ``size``: the slices rounded up
    to a multiple of DEPTH_STEP, or 0 (cubes) where that is not below ``size``."""
    if slices <= 0:
        return 0
    depth = DEPTH_STEP * max(1, math.ceil(slices / DEPTH_STEP))
    return depth if depth < size else 0


def suggested_space(min_side: float, ndim: int, gpu: bool) -> tuple[str, int, str]:
    """(space, resolution, why): pixel or latent diffusion for images of this (median) shorter side.

    A latent model is suggested once the images are at least twice the largest pixel size the hardware trains
    (``PIXEL_LIMIT``), at that size: its denoiser then works on a grid ``LATENT_FACTOR`` times smaller per side,
    so a latent model at 128 px costs about a pixel model at 32 px."""
    limit = PIXEL_LIMIT[(ndim, gpu)]
    where = "a GPU" if gpu else "a 2-core CPU"
    if min_side < 2 * limit:
        size = min(suggested_resolution(min_side, gpu), limit)
        return "pixel", size, (f"the images' shorter side ({min_side:g} px) is below {2 * limit} px: a pixel model "
                               f"trains at {size} px on {where}")
    size = 2 * limit
    return "latent", size, (f"the images' shorter side is {min_side:g} px; on {where} a pixel model stops at "
                            f"{limit} px, while a latent model at {size} px trains on a {size // LATENT_FACTOR} px "
                            "grid (meddiff train-autoencoder, then meddiff train --autoencoder; docs/latent.md)")


def channel_order(channels: set[str]) -> list[str]:
    """Image channels in the canonical order (then by name), masks last."""
    images = [c for c in CANONICAL_ORDER if c in channels]
    images += sorted(c for c in channels if c not in CANONICAL_ORDER and not c.startswith("mask"))
    return images + sorted(c for c in channels if c.startswith("mask"))


@dataclass(frozen=True)
class Plan:
    channels: list[str]
    class_names: list[str]
    mask_labels: int
    resolution: int
    ndim: int
    widths: tuple[int, ...]
    batch_size: int
    sites: list[str]
    latent_note: str = ""  # when every site's images call for latent diffusion (suggested_space): what to know
    depth: int = 0  # a 3D plan of volumes with fewer slices than the resolution: [schema] depth (docs/data.md)


    def federation_toml(self, run_dir: str = "runs/federation", local_steps: int = 100, rounds: int = 10) -> str:
        attention = ", ".join("true" if i == len(self.widths) - 1 else "false" for i in range(len(self.widths)))
        return "\n".join([
            f"# planned by `meddiff plan` from the fingerprints of {', '.join(self.sites)}",
            *([f"# {self.latent_note}"] if self.latent_note else []),
            f"run_dir = {json.dumps(run_dir)}", "", "[schema]", f"channels = {json.dumps(self.channels)}",
            f"class_names = {json.dumps(self.class_names)}", f"mask_labels = {self.mask_labels}",
            f"resolution = {self.resolution}", *([f"depth = {self.depth}"] if self.depth else []), "", "[model]",
            f"spatial_dims = {self.ndim}",
            f"channels = {json.dumps(list(self.widths))}", f"attention_levels = [{attention}]", "", "[train]",
            f"batch_size = {self.batch_size}", "", "[federation]", f"rounds = {rounds}",
            f"local_steps = {local_steps}", f"min_sites = {min(2, len(self.sites))}", ""])


def plan_from_fingerprints(fingerprints: dict[str, dict], gpu: bool = False, volumes: bool = False) -> Plan:
    """One plan for the sites' fingerprints (``Fingerprint.to_dict()`` each, by site name): the union of their
    channels and classes, the smallest of their suggested resolutions, a network and batch for it. A 2D model
    (volumes are cut into slices, [data] slices = true) unless ``volumes``: then a 3D model of 3D data."""
    if not fingerprints:
        raise ValueError("no fingerprint given: run `meddiff site check DATA --json FILE` at each site")
    prints = list(fingerprints.values())
    channels = channel_order({c["name"] for f in prints for c in f["channels"] if c["examples"]})
    classes = list(dict.fromkeys(k for f in prints for k in f.get("class_names") or
                                 [c for c in f["class_counts"] if c != "unlabelled"]))
    labels = [max((int(k) for k in (c.get("label_counts") or {})), default=1) for f in prints for c in f["channels"]
              if c["name"].startswith("mask")]
    key = "suggested_resolution_gpu" if gpu else "suggested_resolution"
    resolution = min(int(f[key]) for f in prints)
    flat = [name for name, f in fingerprints.items() if int(f["ndim"]) != 3]
    if volumes and flat:
        raise ValueError(f"a 3D model needs volumes at every site; {flat} hold 2D images")
    widths, batch = NETWORKS[resolution]
    latent = all(f.get("suggested_space") == "latent" for f in prints) and not gpu
    note = ("every site's images call for latent diffusion (see `meddiff site check`); this plan trains a pixel "
            f"model at {resolution} px. For a latent one, add [federation] stage = \"both\" and an [autoencoder] "
            "table (docs/latent.md)") if latent else ""
    slices = max((float(f.get("median_slices", 0)) for f in prints), default=0.0)
    depth = suggested_depth(slices, resolution) if volumes else 0
    return Plan(channels, classes, max(labels, default=1), resolution, 3 if volumes else 2, widths, batch,
                list(fingerprints), note, depth)


def read_fingerprint(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
