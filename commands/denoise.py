"""``meddiff denoise``: denoise a site's images with the global model, next to non-local means and TV."""

from __future__ import annotations

import argparse

import torch

from ..common.config import ConfigError
from .task_io import add_common_arguments, open_task, print_table, run_timed, write_outputs
from ..common.console import plain_console

TASK = "denoise"


def add_parser(commands) -> None:
    p = commands.add_parser("denoise", help="denoise images: enter the reverse diffusion at their noise level")
    add_common_arguments(p)
    p.add_argument("--noise-model", choices=["gaussian", "rician", "poisson"], default="gaussian")
    p.add_argument("--level", type=float, help="noise std in [0, 1] intensity units (default: estimated per image)")
    p.add_argument("--simulate", type=float, metavar="LEVEL",
                   help="evaluate: add --noise-model noise of this std to the (clean) data, denoise, and score "
                        "PSNR/SSIM against the clean images; without it the data is taken as already noisy")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--steps", type=int, default=20, help="sampler steps from the entry time to 0")
    p.add_argument("--samples", type=int, default=1, help="ddpm: posterior samples averaged per image")
    p.add_argument("--no-baselines", action="store_true", help="skip non-local means and total variation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.denoise import DenoiseSettings, classical_baselines, denoise
    from ..tasks.figures import first_image_channel, panel
    from ..tasks.metrics import image_quality, to_unit
    from ..tasks.noise import add_noise
    from ..tasks.task_data import image_availability

    try:
        settings = DenoiseSettings(args.noise_model, args.level, args.sampler, args.steps, args.samples)
        if args.simulate is not None and args.simulate <= 0:
            raise ValueError(f"--simulate must be > 0, got {args.simulate}")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    loaded, data = open_task(args, "denoise")
    have = image_availability(data, loaded.schema)
    clean = to_unit(data.images)
    mask = have.reshape(have.shape + (1,) * (clean.dim() - 2))
    noisy = clean
    if args.simulate is not None:
        generator = torch.Generator().manual_seed(args.seed)
        noisy = torch.where(mask, add_noise(clean, args.noise_model, args.simulate, generator), clean)
    result, seconds = run_timed("denoise", lambda: denoise(loaded, noisy, have, settings, seed=args.seed))
    outputs = {"diffusion": result["denoised"]}
    if not args.no_baselines:
        outputs.update(classical_baselines(noisy, have, result["level"]))
    report = {"task": "denoising", "model": str(args.model), "data": args.data, "examples": len(data),
              "settings": vars(settings), "simulated_level": args.simulate, "seconds": seconds,
              "device": str(loaded.device), "estimated_level_mean": float(result["level"].mean()),
              "entry_time_mean": float(result["start_t"].mean()), "metrics": {}}
    rows = []
    if args.simulate is not None:
        for name, images in {"noisy input": noisy, **outputs}.items():
            report["metrics"][name] = image_quality(images, clean, have)
            rows.append((name, report["metrics"][name]["psnr"], report["metrics"][name]["ssim"]))
        best = max((n for n in outputs if n != "diffusion"), key=lambda n: report["metrics"][n]["psnr"], default=None)
        if best:
            report["psnr_gain_over_best_baseline_db"] = report["metrics"]["diffusion"]["psnr"] - report["metrics"][best]["psnr"]
        report["psnr_gain_over_input_db"] = report["metrics"]["diffusion"]["psnr"] - report["metrics"]["noisy input"]["psnr"]
    columns = {"clean" if args.simulate is not None else "input": first_image_channel(clean, have)}
    if args.simulate is not None:
        columns["noisy"] = first_image_channel(noisy, have)
    columns.update({name: first_image_channel(images, have) for name, images in outputs.items()})
    figure = panel(columns, f"{args.out}/denoise.png")
    path = write_outputs(args.out, TASK, {**{k.replace(" ", "_"): v for k, v in outputs.items()}, "noisy": noisy,
                                          "level": result["level"]}, report)
    console = plain_console()
    if rows:
        print_table(f"denoising ({args.noise_model}, level {args.simulate}) on {len(data)} images, [0, 1] units",
                    ("method", "PSNR (dB)", "SSIM"), rows, console)
    console.print(f"estimated noise level {report['estimated_level_mean']:.4f}; {seconds:.1f} s -> "
                  f"{path.with_suffix('.npz')}, {figure}, {path}")
    return 0
