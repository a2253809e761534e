"""``meddiff reconstruct``: undersampled single-coil Cartesian MRI, next to zero-filled and TV reconstructions.

Two inputs:
- ``--data`` images: k-space is simulated from each image's ``--channel`` with a random or equispaced mask at
  ``--acceleration``, and the results are scored (PSNR, SSIM, NMSE) against the fully sampled image;
- ``--kspace FILE`` (.npy or .npz with ``kspace`` and optionally ``mask``): measured complex k-space, (N, H, W)
  or (H, W), with ``--mask FILE`` ((W,) sampled columns or (H, W)) unless the .npz holds it. It is cropped to the
  model's resolution in k-space, scaled so the zero-filled image's 99.5th percentile is 1, and the outputs are
  scaled back. ``--data`` may then give fully sampled other contrasts for ``--given``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from typing import TYPE_CHECKING

from ..common.config import ConfigError
from ..tasks.settings import MASK_KINDS, RECONSTRUCT_SAMPLERS, ReconstructSettings
from ..tasks.settings import ACCELERATIONS
from .task_io import add_common_arguments, finish, open_task, run_timed, settings_from

if TYPE_CHECKING:  # torch is imported where it is used: `meddiff --help` does not wait for it
    import torch


def add_parser(commands) -> None:
    p = commands.add_parser("reconstruct", help="undersampled MRI reconstruction with data consistency")
    add_common_arguments(p, data_required=False)
    p.add_argument("--channel", help="the contrast to reconstruct (default: the checkpoint's first image channel)")
    p.add_argument("--kspace", help="measured complex k-space (.npy, or .npz with 'kspace' and optionally 'mask')")
    p.add_argument("--mask", help="sampled lines for --kspace (.npy): (W,) columns or (H, W)")
    p.add_argument("--acceleration", type=int, choices=ACCELERATIONS, default=4,
                   help="simulation: 1 / sampled fraction")
    p.add_argument("--mask-kind", choices=MASK_KINDS, default=MASK_KINDS[0])
    p.add_argument("--center-fraction", type=float, help="simulation: fully sampled centre (default 0.32 / accel.)")
    p.add_argument("--given", default="", help="comma-separated other contrasts from --data given fully sampled")
    defaults = ReconstructSettings()
    p.add_argument("--sampler", choices=RECONSTRUCT_SAMPLERS, default=defaults.sampler)
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--eta", type=float, default=defaults.eta, help="ddim: fresh noise per step (0 = deterministic)")
    p.add_argument("--samples", type=int, default=defaults.samples,
                   help="posterior samples averaged per image (higher PSNR)")
    p.add_argument("--tv-weight", type=float, default=0.002, help="the TV baseline's regularisation weight")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.set_defaults(func=run)


def _load_measurement(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) complex k-space and its (W,) or (H, W) mask from the files, with errors naming the file."""
    import torch
    path = Path(args.kspace)
    if not path.is_file():
        raise ConfigError(f"--kspace {path}: no such file")
    mask = None
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                if "kspace" not in archive:
                    raise ConfigError(f"--kspace {path}: the archive has {list(archive.keys())}, not 'kspace'")
                kspace = archive["kspace"]
                mask = archive["mask"] if "mask" in archive else None
        else:
            kspace = np.load(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--kspace {path}: cannot read it ({error}); save it with numpy.save / numpy.savez") from None
    if args.mask:
        try:
            mask = np.load(args.mask)
        except (OSError, ValueError) as error:
            raise ConfigError(f"--mask {args.mask}: cannot read it ({error})") from None
    if mask is None:
        raise ConfigError(f"--kspace {path} holds no 'mask': give --mask FILE.npy with the sampled lines")
    if not np.iscomplexobj(kspace):
        raise ConfigError(f"--kspace {path}: k-space must be complex (got {kspace.dtype})")
    kspace = kspace[None] if kspace.ndim == 2 else kspace
    if kspace.ndim != 3:
        raise ConfigError(f"--kspace {path}: expected (N, H, W) or (H, W) single-coil k-space, got shape "
                          f"{kspace.shape}; multi-coil data is not supported (combine the coils first)")
    if not np.isfinite(kspace).all():
        raise ConfigError(f"--kspace {path}: contains NaN or infinite values")
    return torch.from_numpy(kspace.astype(np.complex64)), torch.from_numpy(np.asarray(mask).astype(bool))


def _measurement(args: argparse.Namespace, loaded, data, index: int):
    """The k-space to reconstruct from (measured, from --kspace; or simulated from --data), and the data it
    belongs to (the examples that have the channel, when simulated)."""
    import torch
    from ..tasks import reconstruct_task as task

    if args.kspace:
        kspace, mask = _load_measurement(args)
        try:
            m = task.measured(kspace, mask, loaded.resolution)
        except ValueError as error:
            raise ConfigError(f"--kspace {args.kspace}: {error}") from None
        if data is not None and len(data) != len(m.kspace):
            raise ConfigError(f"--data has {len(data)} examples but --kspace {args.kspace} has {len(m.kspace)}")
        return m, data
    have = data.available[:, index]
    if not have.any():
        raise ConfigError(f"reconstruct: no example of {args.data} has the {loaded.schema.channels[index]} channel "
                          "to simulate from")
    data = data.subset(torch.nonzero(have).flatten())
    return task.simulated(data.images[:, index], loaded.resolution, args.acceleration, args.center_fraction,
                          args.mask_kind, args.seed), data


def _given(data, schema, names: list[str]):
    """(condition, given) for the fully sampled other contrasts of --given, or (None, None)."""
    import torch
    if not names or data is None:
        return None, None
    given = torch.zeros_like(data.available)
    for name in names:
        given[:, schema.index(name)] = data.available[:, schema.index(name)]
    return data.images.clone(), given


def run(args: argparse.Namespace) -> int:
    from ..common.diffusion.loading import load_model
    from ..tasks.reconstruct import ReconstructSettings
    from ..tasks.reconstruct_task import image_channels, reconstruct_task

    if not args.data and not args.kspace:
        raise ConfigError("give --data (images: k-space is simulated and the result scored) or --kspace FILE")
    settings = settings_from(ReconstructSettings, args.sampler, args.steps, args.eta, args.samples, args.batch_size)
    given_names = [c for c in args.given.split(",") if c]
    if args.data:
        loaded, data = open_task(args, "reconstruct", need=tuple(given_names), latent_ok=True)
    else:
        loaded, data = load_model(args.model, use_ema=not args.raw_weights, device=args.device,
                                  latent_ok=True), None
    if loaded.spec.spatial_dims != 2:
        raise ConfigError("reconstruct: only 2D k-space is supported; this checkpoint is a 3D model")
    index = run_timed("reconstruct", lambda: image_channels(loaded.schema, args.channel, given_names))[0]
    measurement, data = _measurement(args, loaded, data, index)
    condition, given = _given(data, loaded.schema, given_names)
    result, _ = run_timed("reconstruct", lambda: reconstruct_task(loaded, measurement, index, settings, condition,
                                                                  given, args.tv_weight, args.seed))
    result.report.update(model=str(args.model), data=args.data, kspace=args.kspace, given=given_names)
    return finish(args.out, result)
