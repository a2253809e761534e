"""``meddiff segment``: the mask channel sampled N times given the image channels (an implicit ensemble):
probability, segmentation and uncertainty maps, scored with Dice and HD95 when the data has masks."""

from __future__ import annotations

import argparse

from rich.console import Console

from ..common.config import ConfigError
from .task_io import add_common_arguments, open_task, print_table, run_timed, write_outputs

TASK = "segment"


def add_parser(commands) -> None:
    p = commands.add_parser("segment", help="segmentation by sampling the mask channel (ensemble + uncertainty)")
    add_common_arguments(p)
    p.add_argument("--mask-channel", help="the checkpoint's mask channel to sample (default: its first)")
    p.add_argument("--samples", type=int, default=8, help="ensemble size (draws per image)")
    p.add_argument("--sampler", choices=["ddim", "ddpm", "dpm++2m"], default="ddim")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=run)


def _middle_slice(volumes):
    """(N, H, W) for the figure: 3D (N, D, H, W) shows its middle slice."""
    return volumes if volumes.dim() == 3 else volumes[:, volumes.shape[1] // 2]


def run(args: argparse.Namespace) -> int:
    from ..tasks.figures import first_image_channel, panel
    from ..tasks.metrics import to_unit
    from ..tasks.segment import SegmentSettings, as_numpy, dice_and_hd95, segment
    from ..tasks.task_data import image_availability

    try:
        settings = SegmentSettings(args.samples, args.sampler, args.steps, args.batch_size)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    loaded, data = open_task(args, "segment")
    schema = loaded.schema
    masks = [schema.channels[i] for i in schema.mask_indices]
    if not masks:
        raise ConfigError(f"segment: the checkpoint's schema {list(schema.channels)} has no mask channel; train the "
                          "model on data with a mask channel (e.g. [data] channels = [..., 'mask'])")
    name = args.mask_channel or masks[0]
    if name not in masks:
        raise ConfigError(f"segment: {name!r} is not a mask channel of the checkpoint's schema "
                          f"{list(schema.channels)}; choose from {masks}")
    index = schema.index(name)
    given = image_availability(data, schema)
    result, seconds = run_timed("segment", lambda: segment(loaded, data.images, given, index, settings, args.seed))
    report = {"task": "segmentation", "model": str(args.model), "data": args.data, "examples": len(data),
              "mask_channel": name, "settings": vars(settings), "seconds": seconds, "device": str(loaded.device),
              "mean_uncertainty": float(result.variance.mean()), "metrics": {}}
    truth_known = data.available[:, index]
    columns = {"image": to_unit(first_image_channel(data.images, given)), "probability": result.foreground,
               "segmentation": (result.labels > 0).float(), "uncertainty map": result.variance}
    if truth_known.any():
        from ..common.data.transforms import mask_values_to_labels

        labels = mask_values_to_labels(data.images[:, index], schema.mask_labels)
        truth = labels[truth_known] > 0
        report["metrics"] = dice_and_hd95(result.labels[truth_known] > 0, truth)
        columns["truth"] = (labels > 0).float()
    figure = panel({k: _middle_slice(v) for k, v in columns.items()}, f"{args.out}/segment.png")
    path = write_outputs(args.out, TASK, as_numpy(result), report)
    console = Console()
    if report["metrics"]:
        m = report["metrics"]
        print_table(f"segmentation of {name}: {args.samples}-draw ensemble on {m['examples']} images "
                    f"({m['with_foreground']} with foreground)", ("metric", "value"),
                    [("Dice", m["dice"]), ("HD95 (px)", m["hd95"]),
                     ("false positives on empty", m["false_positive_rate_on_empty"])], console)
    console.print(f"{seconds:.1f} s -> {path.with_suffix('.npz')}, {figure}, {path}")
    return 0
