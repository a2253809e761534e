"""``meddiff detect-anomalies``: healthy reconstructions, per-pixel anomaly maps, image scores and, once thresholds
are calibrated on healthy validation data (``--calibrate-fpr``), decisions at a stated false-positive rate."""

from __future__ import annotations

import argparse

from ..common.config import ConfigError
from ..tasks.settings import METHODS, RESIDUALS, AnomalySettings
from ..common.console import plain_console
from .task_io import add_common_arguments, finish, open_task, run_timed, settings_from


def add_parser(commands) -> None:
    p = commands.add_parser("detect-anomalies", help="anomaly maps, scores and calibrated decisions")
    add_common_arguments(p)
    defaults = AnomalySettings()
    p.add_argument("--method", choices=METHODS, default=defaults.method,
                   help="anoddpm: partial diffusion to --depth and back; multi-depth: anoddpm at each of --depths, "
                        "maps averaged; pddpm: each patch reconstructed from the rest of the image; counterfactual: "
                        "DDIM-encode to --depth, decode guided to the healthy class (needs a class-conditional model)")
    p.add_argument("--depth", type=float, default=defaults.depth, help="t*: how far into the diffusion (0-1]")
    p.add_argument("--depths", default=",".join(map(str, defaults.depths)),
                   help="multi-depth: comma-separated depths")
    p.add_argument("--steps", type=int, default=defaults.steps, help="sampler steps from --depth to 0")
    p.add_argument("--guidance", type=float, default=defaults.guidance,
                   help="classifier-free guidance towards the healthy class (class-conditional models)")
    p.add_argument("--healthy-class", default=defaults.healthy_class,
                   help="the class name reconstructions are steered to")
    p.add_argument("--repeats", type=int, default=defaults.repeats,
                   help="noise draws per image (per depth), their errors averaged")
    p.add_argument("--patches", type=int, default=defaults.patches, help="pddpm: patches per side")
    p.add_argument("--smoothing", type=int, default=defaults.smoothing,
                   help="mean filter width for the anomaly map (1 = none)")
    p.add_argument("--median", type=int, default=defaults.median,
                   help="median filter width for the anomaly map, before the mean filter (1 = none)")
    p.add_argument("--foreground-level", type=float, default=defaults.foreground_level,
                   help="pixels darker than this (0-1) are background and never scored (0 = score every pixel)")
    p.add_argument("--residual", choices=RESIDUALS, default=defaults.residual,
                   help="which differences from the healthy reconstruction count: absolute (both signs), brighter "
                        "(lesions hyperintense on FLAIR, T2 or contrast-enhanced T1) or darker")
    p.add_argument("--score-channels", default="", metavar="NAMES",
                   help="comma-separated image channels whose errors are scored, e.g. flair,t2 (default: every "
                        "image channel an example has)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--calibrate-fpr", type=float, metavar="FPR",
                   help="--data is healthy validation data: choose the pixel and image thresholds that flag FPR "
                        "(e.g. 0.05) of it and save them beside the model for later runs with these settings")
    p.set_defaults(func=run)


def _depths(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(d) for d in text.split(",") if d.strip())
    except ValueError:
        raise ConfigError(f"--depths {text!r}: expected numbers like 0.25,0.5,0.75") from None


def run(args: argparse.Namespace) -> int:
    from ..tasks.anomaly import anomaly_task, check_scored_channels
    from ..tasks.anomaly_calibration import calibration_task
    from ..tasks.anomaly_thresholds import load_thresholds, save_thresholds

    settings = settings_from(AnomalySettings, args.method, args.depth, _depths(args.depths), args.steps,
                             args.guidance, args.healthy_class, args.repeats, args.patches, smoothing=args.smoothing,
                             median=args.median, foreground_level=args.foreground_level, residual=args.residual,
                             channels=tuple(c.strip() for c in args.score_channels.split(",") if c.strip()),
                             batch_size=args.batch_size)
    loaded, data = open_task(args, "detect-anomalies", latent_ok=True)
    try:
        check_scored_channels(loaded.schema, settings.channels)
    except ValueError as error:
        raise ConfigError(f"--score-channels: {error}") from None
    if args.calibrate_fpr is not None:
        if not 0.0 < args.calibrate_fpr < 1.0:
            raise ConfigError(f"--calibrate-fpr must be in (0, 1), e.g. 0.05; got {args.calibrate_fpr}")
        (thresholds, result), _ = run_timed("detect-anomalies", lambda: calibration_task(
            loaded, data, settings, args.calibrate_fpr, seed=args.seed))
        saved = save_thresholds(args.model, settings, thresholds, str(args.data))
        result.report.update(model=str(args.model), saved_to=str(saved))
        finish(args.out, result)
        plain_console().print(f"thresholds saved to {saved}: detect-anomalies with this model and these settings "
                              "now reports its decisions at them")
        return 0
    try:
        thresholds = load_thresholds(args.model, settings)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    result, _ = run_timed("detect-anomalies", lambda: anomaly_task(loaded, data, settings, seed=args.seed,
                                                                  thresholds=thresholds))
    result.report["model"] = str(args.model)
    return finish(args.out, result)
