"""``meddiff train-autoencoder``: stage 1 of latent diffusion on one data set (a site, or a pooled baseline).

The file it writes is what ``meddiff train --autoencoder`` encodes the data with before training the diffusion
model on latents (stage 2); the held-out reconstruction quality it prints per channel is the ceiling of every
latent model trained on it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

from rich.table import Table

from ..common.config import ConfigError
from ..common.console import grid_text, plain_console

FILE = "autoencoder.pt"


def add_parser(commands) -> None:
    p = commands.add_parser("train-autoencoder", help="latent diffusion, stage 1: train the autoencoder whose "
                                                      "latents `meddiff train --autoencoder` trains on")
    p.add_argument("--data", required=True, help="data folder or .npz, or 'phantom' for the built-in phantom")
    p.add_argument("--out", required=True, help=f"folder for {FILE} and autoencoder.json")
    p.add_argument("--config", help="site.toml saying how to read --data ([data])")
    p.add_argument("--resolution", type=int, default=0,
                   help="image size, a multiple of the autoencoder's factor (default: config, 32 for the phantom, "
                        "else the size `meddiff site check` suggests for latent diffusion)")
    p.add_argument("--widths", default="16,32,64", help="autoencoder widths per level; each level after the first "
                                                        "halves the size (default 16,32,64: 128 px -> 32 px)")
    p.add_argument("--latent-channels", type=int, default=3, help="latent channels per image channel (default 3)")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600: about 9 min at 128 px on "
                                                          "2 cores)")
    p.add_argument("--batch-size", type=int, default=16, help="single-channel images per step (default 16)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate, cosine-decayed (default 5e-4)")
    p.add_argument("--phantom-n", type=int, default=256, help="phantom examples when --data phantom")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(func=run)


def _spec(args: argparse.Namespace, spatial_dims: int):
    from math import gcd

    from ..common.latent.autoencoder import AutoencoderSpec

    try:
        widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        raise ConfigError(f"--widths {args.widths!r}: expected widths like 16,32,64") from None
    return AutoencoderSpec(widths, args.latent_channels, norm_num_groups=min(16, gcd(*widths)),
                           spatial_dims=spatial_dims)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..client.site_data import HOLDOUT_FRACTION, holdout_split
    from ..common.data.training_set import load_training_set
    from ..common.latent.codec import LatentCodec
    from ..common.latent.training import AutoencoderRecipe, reconstruction_quality, train_autoencoder
    from ..common.site_config import SiteConfig, load_site_config
    from ..common.training.trainer import default_device

    if args.steps < 1 or args.batch_size < 1 or args.lr <= 0:
        raise ConfigError("--steps and --batch-size must be >= 1 and --lr > 0")
    out, console = Path(args.out), plain_console()
    if (out / FILE).exists():
        raise ConfigError(f"{out / FILE} exists; choose another --out (nothing was overwritten)")
    site = load_site_config(args.config) if args.config else SiteConfig()
    try:
        training = load_training_set(args.data, site.data, args.resolution, phantom_n=args.phantom_n, seed=args.seed,
                                     latent=True)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    spec = _spec(args, len(training.tensors.spatial))
    if training.resolution % spec.factor:
        raise ConfigError(f"{training.resolution} px does not divide by the autoencoder's factor {spec.factor} "
                          f"(--widths {args.widths}); pass --resolution "
                          f"{max(spec.factor, training.resolution // spec.factor * spec.factor)}")
    if training.tensors.depth % spec.factor:
        depth = training.tensors.depth
        raise ConfigError(f"depth {depth} does not divide by the autoencoder's factor {spec.factor} "
                          f"(--widths {args.widths}); set [data] depth = "
                          f"{max(spec.factor, round(depth / spec.factor) * spec.factor)} in site.toml")
    data, holdout = holdout_split(training.tensors, HOLDOUT_FRACTION)
    device = torch.device(args.device) if args.device else default_device()
    recipe = AutoencoderRecipe(args.steps, args.batch_size, args.lr, seed=args.seed)
    console.print(f"data {training.source}: {len(data)} examples of {list(data.schema.channels)} at "
                  f"{grid_text(data.spatial)}; autoencoder {list(spec.channels)} -> {spec.latent_channels} latent "
                  f"channels per channel at {grid_text(tuple(s // spec.factor for s in data.spatial))}, on {device}",
                  highlight=False)
    try:
        trained, summary = train_autoencoder(data, spec, recipe, device=device, progress=True)
    except ValueError as e:
        raise ConfigError(f"{training.source}: {e}") from None
    judged = holdout if holdout is not None else data
    quality = reconstruction_quality(LatentCodec(trained, device), judged)
    record = {**summary, "recipe": asdict(recipe), "data": {"source": training.source, "examples": len(data)},
              "quality": {"split": "held-out" if holdout is not None else "training", "examples": len(judged),
                          "channels": quality}}
    if holdout is not None:
        record["data"]["holdout"] = {"fraction": HOLDOUT_FRACTION, "seed": 0, "examples": len(holdout)}
    path = replace(trained, record=record).save(out / FILE)
    from ..common.checkpoint import file_sha256

    record["sha256"], record["file"] = file_sha256(path), str(path)
    (out / "autoencoder.json").write_text(json.dumps(record, indent=2))
    table = Table(title=f"autoencoder reconstruction on {record['quality']['split']} examples ({len(judged)})")
    for column in ("channel", "PSNR (dB)", "SSIM", "examples"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for name, row in quality.items():
        table.add_row(name, f"{row['psnr_db']:.2f}", f"{row['ssim']:.3f}", str(row["examples"]))
    console.print(table)
    console.print(f"{summary['steps']} steps in {summary['seconds']:.0f} s; latent scale {summary['scale']:.3f}; "
                  f"-> {path} (sha256 {record['sha256'][:16]}...)", highlight=False)
    return 0
