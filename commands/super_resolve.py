"""``meddiff super-resolve``: x2 / x4 super-resolution with data consistency, next to bicubic interpolation."""

from __future__ import annotations

import argparse

import torch

from ..common.config import ConfigError
from .task_io import add_common_arguments, open_task, print_table, run_timed, write_outputs
from ..common.console import plain_console

TASK = "super_resolve"


def add_parser(commands) -> None:
    p = commands.add_parser("super-resolve", help="super-resolution (optionally joint denoising) with data consistency")
    add_common_arguments(p)
    p.add_argument("--factor", type=int, choices=[2, 4, 8], default=2)
    p.add_argument("--simulate", action="store_true",
                   help="evaluate: read --data at the model's resolution, average-pool it by --factor, "
                        "super-resolve, and score PSNR/SSIM against the original; without it --data is read "
                        "at the model's resolution / factor and taken as the low-resolution input")
    p.add_argument("--noise-level", type=float, default=0.0,
                   help="std of the noise in the low-resolution input, [0, 1] units (joint denoise + SR); "
                        "with --simulate this noise is also added")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=0.85, help="ddim: fresh noise per step (0 = deterministic)")
    p.add_argument("--samples", type=int, default=1, help="posterior samples averaged per image (higher PSNR)")
    p.add_argument("--start-t", type=float, default=1.0,
                   help="< 1: start from the bicubic image diffused to this time instead of pure noise")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.figures import first_image_channel, panel
    from ..tasks.metrics import image_quality, to_unit
    from ..tasks.super_resolve import SuperResolveSettings, bicubic, downsample, super_resolve
    from ..tasks.task_data import image_availability

    try:
        settings = SuperResolveSettings(args.factor, args.sampler, args.steps, args.eta, 2 * args.noise_level,
                                        args.samples, args.start_t, args.batch_size)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    loaded, data = open_task(args, "super-resolve", resolution_divisor=1 if args.simulate else args.factor)
    have = image_availability(data, loaded.schema)
    low = downsample(data.images, args.factor) if args.simulate else data.images
    if args.simulate and args.noise_level > 0:
        noise = torch.randn(low.shape, generator=torch.Generator().manual_seed(args.seed))
        low = low + 2 * args.noise_level * noise * have.reshape(have.shape + (1,) * (low.dim() - 2))
    high, seconds = run_timed("super-resolve", lambda: super_resolve(loaded, low, settings, seed=args.seed))
    baseline = bicubic(low, args.factor)
    consistency = float((downsample(high, args.factor) - low).abs().amax())
    report = {"task": "super-resolution", "model": str(args.model), "data": args.data, "examples": len(data),
              "settings": vars(settings), "simulated": args.simulate, "seconds": seconds,
              "device": str(loaded.device), "data_consistency_max_abs_error": consistency, "metrics": {}}
    rows = []
    if args.simulate:
        reference = to_unit(data.images)
        for name, images in (("bicubic", baseline), ("diffusion", high)):
            report["metrics"][name] = image_quality(to_unit(images), reference, have)
            rows.append((name, report["metrics"][name]["psnr"], report["metrics"][name]["ssim"]))
        report["psnr_gain_over_bicubic_db"] = report["metrics"]["diffusion"]["psnr"] - report["metrics"]["bicubic"]["psnr"]
    upsampled_input = torch.nn.functional.interpolate(low, scale_factor=args.factor, mode="nearest")
    columns = {"input (nearest)": to_unit(first_image_channel(upsampled_input, have)),
               "bicubic": to_unit(first_image_channel(baseline, have)),
               "diffusion": to_unit(first_image_channel(high, have))}
    if args.simulate:
        columns["reference"] = to_unit(first_image_channel(data.images, have))
    figure = panel(columns, f"{args.out}/super_resolve.png")
    path = write_outputs(args.out, TASK, {"high": high, "low": low, "bicubic": baseline}, report)
    console = plain_console()
    if rows:
        print_table(f"super-resolution x{args.factor} on {len(data)} images, [0, 1] units", ("method", "PSNR (dB)", "SSIM"),
                    rows, console)
    console.print(f"data consistency: max |A(output) - input| = {consistency:.2e}; {seconds:.1f} s -> "
                  f"{path.with_suffix('.npz')}, {figure}, {path}")
    return 0
