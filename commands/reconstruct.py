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
import torch

from ..common.config import ConfigError
from .task_io import add_common_arguments, open_task, print_table, run_timed, write_outputs
from ..common.console import plain_console

TASK = "reconstruct"


def add_parser(commands) -> None:
    p = commands.add_parser("reconstruct", help="undersampled MRI reconstruction with data consistency")
    add_common_arguments(p, data_required=False)
    p.add_argument("--channel", help="the contrast to reconstruct (default: the checkpoint's first image channel)")
    p.add_argument("--kspace", help="measured complex k-space (.npy, or .npz with 'kspace' and optionally 'mask')")
    p.add_argument("--mask", help="sampled lines for --kspace (.npy): (W,) columns or (H, W)")
    p.add_argument("--acceleration", type=int, choices=[2, 4, 6, 8], default=4, help="simulation: 1 / sampled fraction")
    p.add_argument("--mask-kind", choices=["random", "equispaced"], default="random")
    p.add_argument("--center-fraction", type=float, help="simulation: fully sampled centre (default 0.32 / accel.)")
    p.add_argument("--given", default="", help="comma-separated other contrasts from --data given fully sampled")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=0.85, help="ddim: fresh noise per step (0 = deterministic)")
    p.add_argument("--samples", type=int, default=1, help="posterior samples averaged per image (higher PSNR)")
    p.add_argument("--tv-weight", type=float, default=0.002, help="the TV baseline's regularisation weight")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=run)


def _load_measurement(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) complex k-space and its (W,) or (H, W) mask from the files, with errors naming the file."""
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


def run(args: argparse.Namespace) -> int:
    from ..common.diffusion.loading import load_model
    from ..tasks.figures import panel
    from ..tasks.metrics import image_quality, to_unit
    from ..tasks import reconstruct as rec

    if not args.data and not args.kspace:
        raise ConfigError("give --data (images: k-space is simulated and the result scored) or --kspace FILE")
    try:
        settings = rec.ReconstructSettings(args.sampler, args.steps, args.eta, args.samples, args.batch_size)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    given_names = [c for c in args.given.split(",") if c]
    if args.data:
        loaded, data = open_task(args, "reconstruct", need=tuple(given_names))
    else:
        loaded, data = load_model(args.model, use_ema=not args.raw_weights, device=args.device), None
    schema = loaded.schema
    if loaded.spec.spatial_dims != 2:
        raise ConfigError("reconstruct: only 2D k-space is supported; this checkpoint is a 3D model")
    images = [schema.channels[i] for i in schema.image_indices]
    channel = args.channel or images[0]
    for name in [channel, *given_names]:
        if name not in images:
            raise ConfigError(f"reconstruct: channel {name!r} is not an image channel of the checkpoint's schema "
                              f"{list(schema.channels)}; choose from {images}")
    if channel in given_names:
        raise ConfigError(f"reconstruct: {channel} cannot be both reconstructed and --given")
    index = schema.index(channel)
    size = loaded.resolution

    scale, reference = 1.0, None
    if args.kspace:
        kspace, mask = _load_measurement(args)
        try:
            mask = rec.expand_mask(mask, tuple(kspace.shape[-2:]))
            kspace, mask = rec.centre_crop_kspace(kspace, mask, size)
        except ValueError as error:
            raise ConfigError(f"--kspace {args.kspace}: {error}") from None
        kspace = kspace * mask
        scale = float(np.percentile(rec.zero_filled(kspace, mask).numpy(), 99.5)) or 1.0
        kspace = kspace / scale
        columns = mask.all(dim=0)
        phase = rec.estimate_phase(kspace, columns)
        if data is not None and len(data) != len(kspace):
            raise ConfigError(f"--data has {len(data)} examples but --kspace {args.kspace} has {len(kspace)}")
    else:
        have = data.available[:, index]
        if not have.any():
            raise ConfigError(f"reconstruct: no example of {args.data} has the {channel} channel to simulate from")
        data = data.subset(torch.nonzero(have).flatten())
        reference = to_unit(data.images[:, index])
        columns = rec.cartesian_mask(size, args.acceleration, args.center_fraction, args.mask_kind, args.seed)
        mask = rec.expand_mask(columns, (size, size))
        kspace = rec.fft2c(reference.to(torch.complex64)) * mask
        phase = torch.ones_like(kspace)
    condition = given = None
    if given_names and data is not None:
        condition = data.images.clone()
        given = torch.zeros_like(data.available)
        for name in given_names:
            given[:, schema.index(name)] = data.available[:, schema.index(name)]
    result, seconds = run_timed("reconstruct", lambda: rec.reconstruct(
        loaded, kspace, mask, index, phase=phase, condition=condition, given=given, settings=settings, seed=args.seed))
    sampled = mask.expand_as(kspace)
    consistency = float((rec.fft2c(result)[sampled] - kspace[sampled]).abs().max() / kspace.abs().max())
    outputs = {"zero_filled": rec.zero_filled(kspace, mask), "tv": rec.tv_reconstruction(kspace, mask, phase,
                                                                                         args.tv_weight).abs(),
               "diffusion": result.abs()}
    report = {"task": "reconstruction", "model": str(args.model), "data": args.data, "kspace": args.kspace,
              "channel": channel, "given": given_names, "examples": len(kspace), "settings": vars(settings),
              "acceleration": float(mask.numel() / mask.sum()), "sampled_columns": int(columns.sum()),
              "mask_kind": None if args.kspace else args.mask_kind, "seconds": seconds,
              "device": str(loaded.device), "data_consistency_max_relative_error": consistency, "metrics": {},
              "supported": "single-coil 2D Cartesian; multi-coil and non-Cartesian are not supported"}
    rows = []
    if reference is not None:
        for name, image in outputs.items():
            quality = image_quality(image.clamp(0, 1)[:, None], reference[:, None])
            quality["nmse"] = float(rec.nmse(image, reference).mean())
            report["metrics"][name] = quality
            rows.append((name, quality["psnr"], quality["ssim"], quality["nmse"]))
        report["psnr_gain_over_zero_filled_db"] = (report["metrics"]["diffusion"]["psnr"]
                                                   - report["metrics"]["zero_filled"]["psnr"])
    columns_for_figure = {name: image.clamp(0, 1) for name, image in outputs.items()}
    if reference is not None:
        columns_for_figure["reference"] = reference
    figure = panel(columns_for_figure, f"{args.out}/reconstruct.png")
    arrays = {name: image * scale for name, image in outputs.items()}
    arrays.update(complex=result * scale, mask=mask)
    path = write_outputs(args.out, TASK, arrays, report)
    console = plain_console()
    if rows:
        print_table(f"reconstruction of {channel}, x{report['acceleration']:.1f} ({args.mask_kind}) on "
                    f"{len(kspace)} images, [0, 1] units", ("method", "PSNR (dB)", "SSIM", "NMSE"), rows, console)
    console.print(f"data consistency: max |F(output) - y| on sampled lines / max |y| = {consistency:.1e}; "
                  f"{seconds:.1f} s -> {path.with_suffix('.npz')}, {figure}, {path}")
    return 0
