"""``meddiff detect-anomalies``: healthy reconstructions, per-pixel anomaly maps and image scores."""

from __future__ import annotations

import argparse

from ..tasks.anomaly import METHODS, AnomalySettings
from .task_io import add_common_arguments, finish, open_task, run_timed, settings_from


def add_parser(commands) -> None:
    p = commands.add_parser("detect-anomalies", help="anomaly maps and scores (AnoDDPM or counterfactual)")
    add_common_arguments(p)
    defaults = AnomalySettings()
    p.add_argument("--method", choices=METHODS, default=defaults.method,
                   help="anoddpm: partial diffusion to --depth and back; counterfactual: DDIM-encode to --depth, "
                        "decode guided to the healthy class (needs a class-conditional model)")
    p.add_argument("--depth", type=float, default=defaults.depth, help="t*: how far into the diffusion (0-1]")
    p.add_argument("--steps", type=int, default=defaults.steps, help="sampler steps from --depth to 0")
    p.add_argument("--guidance", type=float, default=defaults.guidance,
                   help="counterfactual: guidance towards healthy")
    p.add_argument("--healthy-class", default=defaults.healthy_class,
                   help="the class name reconstructions are steered to")
    p.add_argument("--repeats", type=int, default=defaults.repeats,
                   help="anoddpm: reconstructions averaged per image")
    p.add_argument("--smoothing", type=int, default=defaults.smoothing,
                   help="mean filter width for the anomaly map (1 = none)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.anomaly import anomaly_task

    settings = settings_from(AnomalySettings, args.method, args.depth, args.steps, args.guidance, args.healthy_class,
                             args.repeats, smoothing=args.smoothing, batch_size=args.batch_size)
    loaded, data = open_task(args, "detect-anomalies")
    result, _ = run_timed("detect-anomalies", lambda: anomaly_task(loaded, data, settings, seed=args.seed))
    result.report["model"] = str(args.model)
    return finish(args.out, result)
