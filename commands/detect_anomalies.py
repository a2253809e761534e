"""``meddiff detect-anomalies``: healthy reconstructions, per-pixel anomaly maps and image scores."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ..common.config import ConfigError
from .task_io import add_common_arguments, open_task, print_table, run_timed, write_outputs
from ..common.console import plain_console

TASK = "anomalies"


def add_parser(commands) -> None:
    p = commands.add_parser("detect-anomalies", help="anomaly maps and scores (AnoDDPM or counterfactual)")
    add_common_arguments(p)
    p.add_argument("--method", choices=["anoddpm", "counterfactual"], default="anoddpm",
                   help="anoddpm: partial diffusion to --depth and back; counterfactual: DDIM-encode to --depth, "
                        "decode guided to the healthy class (needs a class-conditional model)")
    p.add_argument("--depth", type=float, default=0.5, help="t*: how far into the diffusion (0-1]")
    p.add_argument("--steps", type=int, default=30, help="sampler steps from --depth to 0")
    p.add_argument("--guidance", type=float, default=3.0, help="counterfactual: guidance towards healthy")
    p.add_argument("--healthy-class", default="healthy", help="the class name reconstructions are steered to")
    p.add_argument("--repeats", type=int, default=1, help="anoddpm: reconstructions averaged per image")
    p.add_argument("--smoothing", type=int, default=3, help="mean filter width for the anomaly map (1 = none)")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=run)


def image_truth(data, loaded, healthy_class: str) -> np.ndarray | None:
    """Which images are anomalous: any lesion pixel in the data's masks, else a class other than healthy."""
    if data.truth is not None:
        return data.truth.flatten(1).any(1).numpy()
    names = loaded.schema.class_names
    if names and healthy_class in names and bool((data.labels >= 0).all()):
        return (data.labels != names.index(healthy_class)).numpy()
    return None


def run(args: argparse.Namespace) -> int:
    from ..tasks.anomaly import AnomalySettings, detect_anomalies, model_noise
    from ..tasks.figures import first_image_channel, panel
    from ..tasks.metrics import detection_scores, pixel_scores, to_unit
    from ..tasks.task_data import image_availability

    try:
        settings = AnomalySettings(args.method, args.depth, args.steps, args.guidance, args.healthy_class,
                                   args.repeats, smoothing=args.smoothing, batch_size=args.batch_size)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    loaded, data = open_task(args, "detect-anomalies")
    result, seconds = run_timed("detect-anomalies", lambda: detect_anomalies(loaded, data, settings, seed=args.seed))
    truth = image_truth(data, loaded, args.healthy_class)
    metrics: dict = {}
    if truth is not None and 0 < truth.sum() < len(truth):
        metrics.update(detection_scores(result["score"].numpy(), truth))
    if data.truth is not None and bool(data.truth.any()):
        metrics.update(pixel_scores(result["map"].numpy(), data.truth.numpy()))
    report = {"task": "anomaly detection", "model": str(args.model), "data": args.data, "examples": len(data),
              "settings": vars(settings), "noise": model_noise(loaded), "seconds": seconds,
              "device": str(loaded.device), "metrics": metrics,
              "ground_truth": "masks" if data.truth is not None else ("classes" if truth is not None else "none")}
    have = image_availability(data, loaded.schema)
    single = torch.ones(len(data), 1, dtype=torch.bool)
    columns = {"input": to_unit(first_image_channel(data.images, have)),
               "healthy reconstruction": to_unit(first_image_channel(result["reconstruction"], have)),
               "anomaly map": first_image_channel(result["map"], single)}
    if data.truth is not None:
        columns["truth"] = first_image_channel(data.truth.float(), single)
    figure = panel(columns, f"{args.out}/anomalies.png")
    path = write_outputs(args.out, TASK, {"map": result["map"], "score": result["score"],
                                          "reconstruction": result["reconstruction"],
                                          **({"truth": data.truth} if data.truth is not None else {})}, report)
    console = plain_console()
    rows = [(k, v) for k, v in metrics.items()] or [("metrics", "none: the data has no masks or classes")]
    print_table(f"anomaly detection ({args.method}, depth {args.depth}) on {len(data)} images", ("metric", "value"),
                rows + [("seconds", seconds)], console)
    console.print(f"maps and scores -> {path.with_suffix('.npz')}, {figure}, {path}")
    return 0
