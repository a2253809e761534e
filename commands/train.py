"""``meddiff train``: centralised / single-site training on a data folder or the built-in phantom."""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, replace
from pathlib import Path

from rich.table import Table

from ..common.config import ConfigError
from ..common.console import plain_console

log = logging.getLogger(__name__)

CHECKPOINT = "model.pt"


def add_parser(commands) -> None:
    p = commands.add_parser("train", help="train the diffusion model on one data set (site-alone / pooled baseline)")
    p.add_argument("--data", required=True, help="data folder or .npz, or 'phantom' for the built-in phantom")
    p.add_argument("--out", required=True, help="run folder: model.pt (resumable checkpoint) and train.json")
    p.add_argument("--config", help="site.toml ([data] section: channels, DICOM rules, mask values, resolution)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out up to --steps")
    p.add_argument("--steps", type=int, help="total optimizer steps (default 1500)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--schedule", choices=["ddpm", "ddpm-cosine", "vp", "subvp", "ve"],
                   help="noise schedule: DDPM (discrete VP), VP / sub-VP / VE SDEs (VE = NCSN); default ddpm")
    p.add_argument("--resolution", type=int, default=0, help="image size (default: config, 32 for the phantom, "
                                                               "else the suggested one)")
    p.add_argument("--channels", help="UNet widths, e.g. 32,64,64 (default) or 128,256,256 on a GPU")
    p.add_argument("--phantom-n", type=int, default=256, help="phantom examples when --data phantom")
    p.add_argument("--noise", choices=["gaussian", "simplex"],
                   help="diffusion noise (default gaussian); simplex trains an AnoDDPM anomaly-detection model (2D)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(func=run)


def _train_config(args: argparse.Namespace, base):
    changes = {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
               "schedule": args.schedule, "seed": args.seed, "noise": args.noise}
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


def _model_config(args: argparse.Namespace, spatial_dims: int = 2):
    """The network for the data: 2D for images and slices, 3D for volumes ([data] slices = false)."""
    from ..common.diffusion.model import ModelConfig

    if not args.channels:
        return ModelConfig(spatial_dims=spatial_dims)
    try:
        widths = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        raise ConfigError(f"--channels {args.channels!r}: expected widths like 32,64,64") from None
    groups = math.gcd(32, *widths)
    if len(widths) < 2 or groups < 4:
        raise ConfigError(f"--channels {args.channels!r}: give at least two widths, each a multiple of 4")
    attention = tuple(i == len(widths) - 1 for i in range(len(widths)))
    return ModelConfig(spatial_dims=spatial_dims, channels=widths, attention_levels=attention,
                       norm_num_groups=groups, num_head_channels=min(32, widths[-1]))


def run(args: argparse.Namespace) -> int:
    from ..client.trainer import LocalTrainer, TrainConfig
    from ..common.config import DataConfig, load_site_config
    from ..client.site_data import HOLDOUT_FRACTION, holdout_split
    from ..common.data.training_set import load_training_set

    out = Path(args.out)
    checkpoint = out / CHECKPOINT
    data_config = load_site_config(args.config).data if args.config else DataConfig()
    console = plain_console()
    if checkpoint.exists() and not args.resume:
        raise ConfigError(f"{checkpoint} exists; pass --resume to continue it, or choose another --out "
                          "(nothing was overwritten)")
    if args.resume:
        fixed = [flag for flag, value in (("--batch-size", args.batch_size), ("--lr", args.lr),
                                          ("--schedule", args.schedule), ("--seed", args.seed),
                                          ("--noise", args.noise),
                                          ("--channels", args.channels)) if value is not None]
        if fixed:
            raise ConfigError(f"--resume continues {checkpoint} as it was trained; only --steps may change, "
                              f"drop {fixed}")
        trainer = LocalTrainer.resume(checkpoint, args.device)
        trainer.config = replace(trainer.config, steps=args.steps or trainer.config.steps)
        resolution = args.resolution or trainer.resolution
        console.print(f"resuming {checkpoint} at step {trainer.step} of {trainer.config.steps}")
    else:
        trainer, resolution = None, args.resolution
    try:
        training = load_training_set(args.data, data_config, resolution, phantom_n=args.phantom_n,
                                     seed=args.seed or 0)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if trainer is None:
        trainer = LocalTrainer(training.tensors.schema, _model_config(args, len(training.tensors.spatial)),
                               _train_config(args, TrainConfig()), args.device)
    elif training.resolution != trainer.resolution:
        raise ConfigError(f"{checkpoint} was trained at {trainer.resolution} px; the data is prepared at "
                          f"{training.resolution} px (pass --resolution {trainer.resolution})")
    data, holdout = training.tensors, None
    if args.data != "phantom":  # kept out for the memorisation audit of `meddiff generate` (the phantom has fresh draws)
        data, holdout = holdout_split(data, HOLDOUT_FRACTION)
    parameters = sum(p.numel() for p in trainer.model.parameters())
    console.print(f"data {training.source}: {training.studies} studies -> {len(data)} examples of "
                  f"{list(data.schema.channels)} at {training.resolution} px; model {parameters / 1e6:.2f} M "
                  f"parameters on {trainer.device}; schedule {trainer.config.schedule}")
    meta = {"data": {"source": training.source, "examples": len(data), "studies": training.studies}}
    if holdout is not None:
        meta["data"]["holdout"] = {"fraction": HOLDOUT_FRACTION, "seed": 0, "examples": len(holdout)}
    result = trainer.train(data, progress=True, checkpoint_path=checkpoint, checkpoint_meta=meta)
    summary = {**asdict(result), "total_steps": trainer.step, "checkpoint": str(checkpoint), **meta}
    (out / "train.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=f"trained {result.steps} steps (total {trainer.step})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("loss", "seconds", "images_per_second", "skipped_nonfinite"):
        table.add_row("mean loss" if key == "loss" else key.replace("_", " "), f"{summary[key]:.4g}" if isinstance(summary[key], float)
                      else str(summary[key]))
    table.add_row("checkpoint", str(checkpoint))
    console.print(table)
    return 0
