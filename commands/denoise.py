"""``meddiff denoise``: denoise a site's images with the global model, next to non-local means and TV."""

from __future__ import annotations

import argparse

from ..tasks.settings import DENOISE_SAMPLERS, DenoiseSettings
from ..tasks.settings import NOISE_MODELS
from .task_io import add_common_arguments, finish, open_task, run_timed, settings_from


def add_parser(commands) -> None:
    p = commands.add_parser("denoise", help="denoise images: enter the reverse diffusion at their noise level")
    add_common_arguments(p)
    p.add_argument("--noise-model", choices=NOISE_MODELS, default=DenoiseSettings.noise_model)
    p.add_argument("--level", type=float, help="noise std in [0, 1] intensity units (default: estimated per image)")
    p.add_argument("--simulate", type=float, metavar="LEVEL",
                   help="evaluate: add --noise-model noise of this std to the (clean) data, denoise, and score "
                        "PSNR/SSIM against the clean images; without it the data is taken as already noisy")
    p.add_argument("--sampler", choices=DENOISE_SAMPLERS, default=DenoiseSettings.sampler)
    p.add_argument("--steps", type=int, default=DenoiseSettings.steps, help="sampler steps from the entry time to 0")
    p.add_argument("--samples", type=int, default=DenoiseSettings.samples,
                   help="ddpm: posterior samples averaged per image")
    p.add_argument("--no-baselines", action="store_true", help="skip non-local means and total variation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.denoise import denoise_task

    settings = settings_from(DenoiseSettings, args.noise_model, args.level, args.sampler, args.steps, args.samples)
    loaded, data = open_task(args, "denoise", latent_ok=True)
    result, _ = run_timed("denoise", lambda: denoise_task(loaded, data, settings, args.simulate,
                                                          not args.no_baselines, args.seed))
    result.report["model"] = str(args.model)
    return finish(args.out, result)
