"""Reconstruction as a task: the measurement (simulated from images, or measured k-space prepared for the model),
the reconstruction next to zero-filled and TV, and the scores when the fully sampled image is known."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..common.diffusion.loading import LoadedModel
from . import reconstruct as rec
from .metrics import image_quality, to_unit
from .result import TaskResult, Table

Tensor = torch.Tensor
OUTPUT = "reconstruct"  # the file stem of the outputs: <out>/reconstruct.npz, .json, .png
from .settings import ACCELERATIONS  # noqa: F401 (re-exported)


@dataclass
class Measurement:
    """kspace: (N, H, W) complex at the model's resolution in [0, 1] image units; mask: (H, W) bool; phase:
    (N, H, W) exp(i phi); columns: (W,) sampled columns; reference: (N, H, W) fully sampled [0, 1] images or None;
    scale: what the outputs are multiplied by to return to the input's units; kind: how the mask was made."""

    kspace: Tensor
    mask: Tensor
    phase: Tensor
    columns: Tensor
    reference: Tensor | None = None
    scale: float = 1.0
    kind: str | None = None


def simulated(images: Tensor, size: int, acceleration: int, center_fraction: float | None, kind: str,
              seed: int) -> Measurement:
    """k-space of (N, H, W) model-unit images under a random or equispaced Cartesian mask."""
    reference = to_unit(images)
    columns = rec.cartesian_mask(size, acceleration, center_fraction, kind, seed)
    mask = rec.expand_mask(columns, (size, size))
    kspace = rec.fft2c(reference.to(torch.complex64)) * mask
    return Measurement(kspace, mask, torch.ones_like(kspace), columns, reference, kind=kind)


def measured(kspace: Tensor, mask: Tensor, size: int) -> Measurement:
    """Measured k-space cropped to the model's resolution, scaled so the zero-filled image's 99.5th percentile
    is 1, with its phase estimated from the fully sampled centre."""
    mask = rec.expand_mask(mask, tuple(kspace.shape[-2:]))
    kspace, mask = rec.centre_crop_kspace(kspace, mask, size)
    kspace = kspace * mask
    scale = float(np.percentile(rec.zero_filled(kspace, mask).numpy(), 99.5)) or 1.0
    kspace = kspace / scale
    columns = mask.all(dim=0)
    return Measurement(kspace, mask, rec.estimate_phase(kspace, columns), columns, scale=scale)


def image_channels(schema, channel: str | None, given: list[str]) -> int:
    """The index of the channel to reconstruct (default: the first image channel), the given ones checked too."""
    images = [schema.channels[i] for i in schema.image_indices]
    channel = channel or images[0]
    for name in [channel, *given]:
        if name not in images:
            raise ValueError(f"channel {name!r} is not an image channel of the checkpoint's schema "
                             f"{list(schema.channels)}; choose from {images}")
    if channel in given:
        raise ValueError(f"{channel} cannot be both reconstructed and --given")
    return schema.index(channel)


def reconstruct_task(loaded: LoadedModel, m: Measurement, index: int, settings: rec.ReconstructSettings,
                     condition: Tensor | None = None, given: Tensor | None = None, tv_weight: float = 0.002,
                     seed: int = 0) -> TaskResult:
    """Reconstruct schema channel ``index`` from ``m``, next to zero-filled and TV; scored against
    ``m.reference`` when there is one."""
    start = time.perf_counter()
    result = rec.reconstruct(loaded, m.kspace, m.mask, index, phase=m.phase, condition=condition, given=given,
                             settings=settings, seed=seed)
    seconds, sampled = time.perf_counter() - start, m.mask.expand_as(m.kspace)
    consistency = float((rec.fft2c(result)[sampled] - m.kspace[sampled]).abs().max() / m.kspace.abs().max())
    outputs = {"zero_filled": rec.zero_filled(m.kspace, m.mask),
               "tv": rec.tv_reconstruction(m.kspace, m.mask, m.phase, tv_weight).abs(), "diffusion": result.abs()}
    report = {"task": "reconstruction", "channel": loaded.schema.channels[index], "examples": len(m.kspace),
              "settings": vars(settings), "acceleration": float(m.mask.numel() / m.mask.sum()),
              "sampled_columns": int(m.columns.sum()), "mask_kind": m.kind, "seconds": seconds,
              "device": str(loaded.device), "data_consistency_max_relative_error": consistency, "metrics": {},
              "supported": "single-coil 2D Cartesian; multi-coil and non-Cartesian are not supported"}
    table = _score(report, outputs, m) if m.reference is not None else None
    columns = {name: image.clamp(0, 1) for name, image in outputs.items()}
    if m.reference is not None:
        columns["reference"] = m.reference
    arrays = {name: image * m.scale for name, image in outputs.items()} | {"complex": result * m.scale, "mask": m.mask}
    return TaskResult(OUTPUT, arrays, report, columns, table, "data consistency: max |F(output) - y| on sampled "
                      f"lines / max |y| = {consistency:.1e}; {seconds:.1f} s")


def _score(report: dict, outputs: dict[str, Tensor], m: Measurement) -> Table:
    for name, image in outputs.items():
        quality = image_quality(image.clamp(0, 1)[:, None], m.reference[:, None])
        quality["nmse"] = float(rec.nmse(image, m.reference).mean())
        report["metrics"][name] = quality
    report["psnr_gain_over_zero_filled_db"] = (report["metrics"]["diffusion"]["psnr"]
                                               - report["metrics"]["zero_filled"]["psnr"])
    rows = [(name, q["psnr"], q["ssim"], q["nmse"]) for name, q in report["metrics"].items()]
    return Table(f"reconstruction of {report['channel']}, x{report['acceleration']:.1f} ({m.kind}) on "
                 f"{len(m.kspace)} images, [0, 1] units", ("method", "PSNR (dB)", "SSIM", "NMSE"), rows)
