"""``meddiff super-resolve``: x2 / x4 super-resolution with data consistency, next to bicubic interpolation."""

from __future__ import annotations

import argparse

from ..tasks.settings import FACTORS, SR_SAMPLERS, SuperResolveSettings
from .task_io import add_common_arguments, finish, open_task, run_timed, settings_from


def add_parser(commands) -> None:
    p = commands.add_parser("super-resolve", help="super-resolution (optionally joint denoising) with data consistency")
    add_common_arguments(p)
    defaults = SuperResolveSettings()
    p.add_argument("--factor", type=int, choices=FACTORS, default=defaults.factor)
    p.add_argument("--simulate", action="store_true",
                   help="evaluate: read --data at the model's resolution, average-pool it by --factor, "
                        "super-resolve, and score PSNR/SSIM against the original; without it --data is read "
                        "at the model's resolution / factor and taken as the low-resolution input")
    p.add_argument("--noise-level", type=float, default=0.0,
                   help="std of the noise in the low-resolution input, [0, 1] units (joint denoise + SR); "
                        "with --simulate this noise is also added")
    p.add_argument("--sampler", choices=SR_SAMPLERS, default=defaults.sampler)
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--eta", type=float, default=defaults.eta, help="ddim: fresh noise per step (0 = deterministic)")
    p.add_argument("--samples", type=int, default=defaults.samples,
                   help="posterior samples averaged per image (higher PSNR)")
    p.add_argument("--start-t", type=float, default=defaults.start_t,
                   help="< 1: start from the bicubic image diffused to this time instead of pure noise")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.super_resolve import super_resolve_task

    settings = settings_from(SuperResolveSettings, args.factor, args.sampler, args.steps, args.eta,
                             2 * args.noise_level, args.samples, args.start_t, args.batch_size)
    loaded, data = open_task(args, "super-resolve", resolution_divisor=1 if args.simulate else args.factor,
                             latent_ok=True)
    result, _ = run_timed("super-resolve", lambda: super_resolve_task(loaded, data, settings, args.simulate,
                                                                      args.noise_level, args.seed))
    result.report["model"] = str(args.model)
    return finish(args.out, result)
