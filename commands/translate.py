"""``meddiff translate --from t1pre --to t2``: the missing contrast generated from the present ones, K-sample
average and uncertainty, next to the histogram-matched source (identity baseline) and, with --baseline-train, a
supervised UNet; scored where the data has the target."""

from __future__ import annotations

import argparse

from ..tasks.settings import TRANSLATE_SAMPLERS, TranslateSettings
from .task_io import add_common_arguments, finish, open_task, run_timed, settings_from, site_data_config


def add_parser(commands) -> None:
    p = commands.add_parser("translate", help="generate a missing contrast from the present ones")
    add_common_arguments(p)
    defaults = TranslateSettings()
    p.add_argument("--from", dest="sources", required=True, help="comma-separated source channels, e.g. t1pre")
    p.add_argument("--to", dest="target", required=True, help="the channel to generate, e.g. t2")
    p.add_argument("--samples", type=int, default=defaults.samples, help="draws averaged per image (Monte-Carlo mean)")
    p.add_argument("--sampler", choices=TRANSLATE_SAMPLERS, default=defaults.sampler)
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--reference-data", help="images of the target contrast for the histogram-matching baseline "
                                            "(e.g. the training set); default: the target channel of --data")
    p.add_argument("--baseline-train", help="(source, target) pairs to train the supervised MONAI UNet baseline on")
    p.add_argument("--baseline-seconds", type=float, default=300.0, help="wall-clock budget of the UNet")
    p.add_argument("--baseline-epochs", type=int, default=200)
    p.set_defaults(func=run)


def _baselines(args: argparse.Namespace, loaded, sources: list[str]):
    """(reference images of the target, trained UNet) from --reference-data and --baseline-train, when given."""
    from ..tasks.task_data import load_task_data
    from ..tasks.translate import channel_indices, supervised_unet
    from ..tasks.unet_baseline import UNetRecipe

    source_indices, target = channel_indices(loaded.schema, sources, args.target)
    reference = unet = None
    if args.reference_data:
        data = load_task_data(args.reference_data, loaded, site_data_config(args), task="translate",
                              need=(args.target,))
        reference = data.images[data.available[:, target], target]
    if args.baseline_train:
        pairs = load_task_data(args.baseline_train, loaded, site_data_config(args), task="translate",
                               need=(*sources, args.target))
        recipe = UNetRecipe(epochs=args.baseline_epochs, seconds=args.baseline_seconds, seed=args.seed,
                            device=str(loaded.device))
        unet = supervised_unet(pairs, source_indices, target, recipe)
    return reference, unet


def run(args: argparse.Namespace) -> int:
    from ..tasks.translate import translate_task

    settings = settings_from(TranslateSettings, args.samples, args.sampler, args.steps, args.batch_size)
    sources = [c for c in args.sources.split(",") if c]
    loaded, data = open_task(args, "translate", need=tuple(sources), latent_ok=True)
    reference, unet = run_timed("translate", lambda: _baselines(args, loaded, sources))[0]
    result, _ = run_timed("translate", lambda: translate_task(loaded, data, sources, args.target, settings,
                                                              reference, unet, args.seed))
    result.report.update(model=str(args.model), baseline_reference=args.reference_data or
                         "the target channel of --data (pooled histogram)")
    return finish(args.out, result)
