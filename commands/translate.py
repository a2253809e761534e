"""``meddiff translate --from t1pre --to t2``: the missing contrast generated from the present ones, K-sample
average and uncertainty, next to the histogram-matched source (identity baseline); scored where the data has
the target."""

from __future__ import annotations

import argparse

import torch

from ..common.config import ConfigError
from .task_io import add_common_arguments, open_task, print_table, run_timed, site_data_config, write_outputs
from ..common.console import plain_console

TASK = "translate"


def add_parser(commands) -> None:
    p = commands.add_parser("translate", help="generate a missing contrast from the present ones")
    add_common_arguments(p)
    p.add_argument("--from", dest="sources", required=True, help="comma-separated source channels, e.g. t1pre")
    p.add_argument("--to", dest="target", required=True, help="the channel to generate, e.g. t2")
    p.add_argument("--samples", type=int, default=4, help="draws averaged per image (Monte-Carlo mean)")
    p.add_argument("--sampler", choices=["ddim", "ddpm", "dpm++2m"], default="ddim")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reference-data", help="images of the target contrast for the histogram-matching baseline "
                                            "(e.g. the training set); default: the target channel of --data")
    p.add_argument("--baseline-train", help="(source, target) pairs to train the supervised MONAI UNet baseline on")
    p.add_argument("--baseline-seconds", type=float, default=300.0, help="wall-clock budget of the UNet")
    p.add_argument("--baseline-epochs", type=int, default=200)
    p.set_defaults(func=run)


def _supervised(args, loaded, source_indices, target, data, report):
    """The supervised UNet (sources -> target) trained on --baseline-train's pairs, applied to --data."""
    if not args.baseline_train:
        return None
    from ..tasks.task_data import load_task_data
    from ..tasks.unet_baseline import UNetRecipe, train_unet

    names = [loaded.schema.channels[i] for i in source_indices]
    pairs = load_task_data(args.baseline_train, loaded, site_data_config(args), task="translate",
                           need=(*names, loaded.schema.channels[target]))
    keep = pairs.available[:, [*source_indices, target]].all(dim=1)
    if not keep.any():
        raise ConfigError(f"translate: --baseline-train {args.baseline_train} has no example with all of "
                          f"{names} and {loaded.schema.channels[target]}")
    recipe = UNetRecipe(epochs=args.baseline_epochs, seconds=args.baseline_seconds, seed=args.seed,
                        device=str(loaded.device))
    trained = train_unet(pairs.images[keep][:, source_indices], pairs.images[keep, target], "translation", recipe)
    report["supervised_unet"] = {"pairs": int(keep.sum()), "epochs": trained.epochs,
                                 "train_seconds": trained.seconds, "data": args.baseline_train}
    return trained.predict(data.images[:, source_indices]).clamp(-1, 1)


def run(args: argparse.Namespace) -> int:
    from ..tasks.figures import middle_slice, panel
    from ..tasks.metrics import image_quality, to_unit
    from ..tasks.task_data import load_task_data
    from ..tasks.translate import TranslateSettings, histogram_matched, translate

    try:
        settings = TranslateSettings(args.samples, args.sampler, args.steps, args.batch_size)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    sources = [c for c in args.sources.split(",") if c]
    loaded, data = open_task(args, "translate", need=tuple(sources))
    schema = loaded.schema
    images = [schema.channels[i] for i in schema.image_indices]
    for name in [*sources, args.target]:
        if name not in images:
            raise ConfigError(f"translate: {name!r} is not an image channel of the checkpoint's schema "
                              f"{list(schema.channels)}; choose from {images}")
    if args.target in sources:
        raise ConfigError(f"translate: {args.target} cannot be both --from and --to")
    target = schema.index(args.target)
    source_indices = [schema.index(c) for c in sources]
    keep = data.available[:, source_indices].all(dim=1)
    if not keep.any():
        raise ConfigError(f"translate: no example of {args.data} has all of {sources}")
    data = data.subset(torch.nonzero(keep).flatten())
    given = torch.zeros_like(data.available)
    given[:, source_indices] = True
    (mean, variance), seconds = run_timed("translate", lambda: translate(loaded, data.images, given, target,
                                                                          settings, args.seed))
    has_target = data.available[:, target]
    if args.reference_data:
        reference = load_task_data(args.reference_data, loaded, site_data_config(args), task="translate",
                                   need=(args.target,))
        pool = reference.images[reference.available[:, target], target]
    else:
        pool = data.images[has_target, target]
    baseline = histogram_matched(data.images[:, source_indices[0]], pool) if len(pool) else None
    report = {"task": "translation", "model": str(args.model), "data": args.data, "examples": len(data),
              "from": sources, "to": args.target, "settings": vars(settings), "seconds": seconds,
              "device": str(loaded.device), "mean_uncertainty": float(variance.mean()),
              "baseline_reference": args.reference_data or "the target channel of --data (pooled histogram)",
              "metrics": {}}
    supervised = _supervised(args, loaded, source_indices, target, data, report)
    rows = []
    if has_target.any():
        truth = to_unit(data.images[has_target, target])[:, None]
        outputs = {"diffusion": mean}
        if supervised is not None:
            outputs = {"supervised UNet": supervised, **outputs}
        if baseline is not None:
            outputs = {"histogram-matched source": baseline, **outputs}
        for name, output in outputs.items():
            report["metrics"][name] = image_quality(to_unit(output[has_target])[:, None], truth)
            rows.append((name, report["metrics"][name]["psnr"], report["metrics"][name]["ssim"]))
    columns = {f"source {sources[0]}": to_unit(middle_slice(data.images[:, source_indices[0]])),
               "diffusion": to_unit(middle_slice(mean)), "uncertainty map": middle_slice(variance)}
    if has_target.all():
        columns["target"] = to_unit(middle_slice(data.images[:, target]))
    figure = panel(columns, f"{args.out}/translate.png")
    arrays = {"translated": to_unit(mean), "variance": variance}
    if supervised is not None:
        arrays["supervised_unet"] = to_unit(supervised)
    if baseline is not None:
        arrays["histogram_matched"] = to_unit(baseline)
    path = write_outputs(args.out, TASK, arrays, report)
    console = plain_console()
    if rows:
        print_table(f"{'+'.join(sources)} -> {args.target} on {int(has_target.sum())} images, [0, 1] units",
                    ("method", "PSNR (dB)", "SSIM"), rows, console)
    console.print(f"{seconds:.1f} s -> {path.with_suffix('.npz')}, {figure}, {path}")
    return 0
