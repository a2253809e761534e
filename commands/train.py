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
from ..common.console import grid_text, plain_console
from ..common.diffusion.names import NOISES, SCHEDULE_NAMES
from ..common.specs import TRAINABLE

log = logging.getLogger(__name__)

CHECKPOINT = "model.pt"


def add_parser(commands) -> None:
    p = commands.add_parser("train", help="train the diffusion model on one data set (site-alone / pooled baseline)")
    p.add_argument("--data", help="data folder or .npz, or 'phantom' for the built-in phantom (default: the --config "
                                  "site's data: its [data] path, or what its PACS query matches, fetched first)")
    p.add_argument("--out", required=True, help="run folder: model.pt (resumable checkpoint) and train.json")
    p.add_argument("--config", help="site.toml ([data]: channels, DICOM rules, mask values, resolution; [runtime])")
    p.add_argument("--plan", help="a federation.toml or `meddiff plan` file: its [schema] resolution, [model] and "
                                  "[train] set the run (flags below still override them)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out up to --steps")
    p.add_argument("--steps", type=int, help="total optimizer steps (default 1500)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--schedule", choices=sorted(SCHEDULE_NAMES),
                   help="noise schedule: DDPM (discrete VP), VP / sub-VP / VE SDEs (VE = NCSN); default ddpm")
    p.add_argument("--resolution", type=int, default=0, help="image size (default: plan, config, 32 for the "
                                                               "phantom, else the suggested one)")
    p.add_argument("--channels", help="UNet widths, e.g. 32,64,64 (default) or 128,256,256 on a GPU")
    p.add_argument("--phantom-n", type=int, default=256, help="phantom examples when --data phantom")
    p.add_argument("--noise", choices=list(NOISES),
                   help="diffusion noise (default gaussian); simplex trains an AnoDDPM anomaly-detection model (2D)")
    p.add_argument("--trainable", choices=TRAINABLE, help="which parameters train (default all; a part "
                   "spreads DP noise over fewer dimensions when fine-tuning a pretrained model)")
    p.add_argument("--healthy-only", action="store_true", default=None,
                   help="anomaly models: train only on healthy examples (slices without mask foreground when there "
                        "is a mask channel, else those of --healthy-class)")
    p.add_argument("--healthy-class", action="append", dest="healthy_classes", metavar="NAME",
                   help="a class that counts as healthy (repeat for several, e.g. normal and benign); implies "
                        "--healthy-only")
    p.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop when the held-out denoising loss has not improved for PATIENCE evaluations (--steps is "
                        "then the cap) and keep the best model; default 0 = train all --steps")
    p.add_argument("--eval-every", type=int, default=100, metavar="STEPS",
                   help="with --early-stopping: evaluate the held-out loss every STEPS steps (default 100)")
    p.add_argument("--autoencoder", metavar="FILE",
                   help="latent diffusion, stage 2: train on the latents of this autoencoder.pt (`meddiff "
                        "train-autoencoder`); the model file carries it, and its SHA-256")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--devices", help="train on several devices as one (data-parallel), e.g. cuda:0,cuda:1 or all; "
                                     "default: [runtime] devices of --config, else one device")
    p.set_defaults(func=run)


def widths(text: str) -> dict:
    """--channels 32,64,64 as ModelSpec fields (attention at the last level, GroupNorm groups that divide)."""
    try:
        values = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise ConfigError(f"--channels {text!r}: expected widths like 32,64,64") from None
    groups = math.gcd(32, *values)
    if len(values) < 2 or groups < 4:
        raise ConfigError(f"--channels {text!r}: give at least two widths, each a multiple of 4")
    return {"channels": values, "attention_levels": tuple(i == len(values) - 1 for i in range(len(values))),
            "norm_num_groups": groups, "num_head_channels": min(32, values[-1])}


def specs_from(args: argparse.Namespace, spatial_dims: int):
    """(ModelSpec, RecipeSpec, resolution) from the plan (if any) and the flags, flags last."""
    from ..common.specs import ModelSpec, RecipeSpec

    model, recipe, resolution = ModelSpec(spatial_dims=spatial_dims), RecipeSpec(), 0
    if args.plan:
        from ..server.federation_config import load_federation_config

        planned = load_federation_config(args.plan).spec
        model, recipe, resolution = planned.model, planned.recipe, planned.resolution
    model = replace(model, **{k: v for k, v in (("schedule", args.schedule), ("noise", args.noise)) if v is not None},
                    **(widths(args.channels) if args.channels else {}))
    recipe = replace(recipe, **{k: v for k, v in (("batch_size", args.batch_size), ("learning_rate", args.lr),
                                                  ("seed", args.seed), ("trainable", args.trainable),
                                                  ("healthy_only", True if args.healthy_classes else args.healthy_only),
                                                  ("healthy_classes", tuple(args.healthy_classes or ()) or None))
                                if v is not None})
    return model, recipe, args.resolution or resolution


def resumed_trainer(args: argparse.Namespace, checkpoint: Path, runtime):
    from ..common.training.trainer import Trainer

    fixed = [flag for flag, value in (("--batch-size", args.batch_size), ("--lr", args.lr), ("--plan", args.plan),
                                      ("--schedule", args.schedule), ("--seed", args.seed), ("--noise", args.noise),
                                      ("--channels", args.channels), ("--healthy-only", args.healthy_only),
                                      ("--healthy-class", args.healthy_classes), ("--autoencoder", args.autoencoder))
             if value is not None]
    if fixed:
        raise ConfigError(f"--resume continues {checkpoint} as it was trained; only --steps may change, drop {fixed}")
    return Trainer.resume(checkpoint, args.device, steps=args.steps, runtime=runtime)


def run(args: argparse.Namespace) -> int:
    from ..client.site_data import HOLDOUT_FRACTION, holdout_split
    from ..common.data.healthy import healthy_only
    from ..common.data.training_set import load_training_set
    from ..common.site_config import SiteConfig, load_site_config
    from ..common.training.early_stopping import Plateau
    from ..common.training.on_devices import TrainerBuild
    from ..common.training.trainer import DEFAULT_STEPS, Trainer

    if args.early_stopping < 0 or args.eval_every < 1:  # refused before any data is read
        raise ConfigError("--early-stopping must be >= 0 (0 = off) and --eval-every >= 1")
    out, console = Path(args.out), plain_console()
    checkpoint = out / CHECKPOINT
    site = load_site_config(args.config) if args.config else SiteConfig()
    if not args.data:
        if not args.config:
            raise ConfigError("--data is required (a data folder, .npz or phantom), or --config with the site.toml "
                              "whose data to train on")
        from ..client.site_loading import site_data_folder

        args.data = site_data_folder(args.config, site, say=lambda line: console.print(line, highlight=False))
    if checkpoint.exists() and not args.resume:
        raise ConfigError(f"{checkpoint} exists; pass --resume to continue it, or choose another --out "
                          "(nothing was overwritten)")
    trainer = resumed_trainer(args, checkpoint, site.runtime) if args.resume else None
    if trainer is not None:
        console.print(f"resuming {checkpoint} at step {trainer.step} of {trainer.steps}")
    autoencoder = trainer.latent if trainer else _autoencoder(args)
    planned_resolution = pixel_resolution(trainer) if trainer else specs_from(args, 2)[2]
    if autoencoder is not None:
        planned_resolution = _latent_resolution(args, autoencoder, planned_resolution)
    try:
        training = load_training_set(args.data, site.data, args.resolution or planned_resolution,
                                     phantom_n=args.phantom_n, seed=args.seed or 0)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    codec = _codec(autoencoder, training, args.device)
    if trainer is None:
        model, recipe, _ = specs_from(args, len(training.tensors.spatial))
        trainer = Trainer(codec.latent_schema if codec else training.tensors.schema, model, recipe, site.runtime,
                          args.device, steps=args.steps or DEFAULT_STEPS, latent=autoencoder)
    elif training.resolution != pixel_resolution(trainer):
        raise ConfigError(f"{checkpoint} was trained at {pixel_resolution(trainer)} px; the data is prepared at "
                          f"{training.resolution} px (pass --resolution {pixel_resolution(trainer)})")
    data, holdout = training.tensors, None
    if trainer.recipe.healthy_only:  # before the split, so the held-out examples are healthy too (calibration)
        try:
            data = healthy_only(data, trainer.recipe.healthy_classes, training.source)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        console.print(f"healthy only: {len(data)} of {len(training.tensors)} examples")
    if args.data != "phantom" or args.early_stopping:  # kept out for the memorisation audit of `meddiff generate`
        data, holdout = holdout_split(data, HOLDOUT_FRACTION)  # and early stopping (the phantom has fresh draws)
    if codec is not None:  # encoded once: the autoencoder is frozen in stage 2
        data, holdout = (None if part is None else codec.encode_tensors(part) for part in (data, holdout))
        console.print(f"latent: {grid_text(training.tensors.spatial)} x {len(codec.schema.channels)} channels -> "
                      f"{grid_text(data.spatial)} x {len(data.schema.channels)} latent channels (autoencoder "
                      f"{codec.file.sha256[:16]}...)", highlight=False)
    devices = _devices(args, site.runtime)
    if codec is not None and len(devices) > 1:
        raise ConfigError("--autoencoder (latent diffusion) trains on one device so far; drop --devices")
    if args.early_stopping and len(devices) > 1:
        raise ConfigError("--early-stopping runs on one device; drop --devices (or --early-stopping)")
    build = TrainerBuild(trainer.schema, trainer.spec, trainer.recipe, site.runtime, trainer.steps,
                         checkpoint if args.resume else None)
    if len(devices) > 1 and trainer.recipe.batch_size % len(devices):
        raise ConfigError(f"batch size {trainer.recipe.batch_size} does not divide among {len(devices)} devices: "
                          f"pass --batch-size {len(devices) * max(1, trainer.recipe.batch_size // len(devices))}")
    plateau = Plateau(args.early_stopping) if args.early_stopping else None
    return _train_and_report(trainer, training, data, holdout, checkpoint, console, devices, build,
                             (plateau, args.eval_every))


def pixel_resolution(trainer) -> int:
    """The image size a trainer's data is prepared at (a latent model's trainer counts latent positions)."""
    return trainer.latent.resolution if trainer.latent is not None else trainer.resolution


def _autoencoder(args: argparse.Namespace):
    if not args.autoencoder:
        return None
    from ..common.latent.autoencoder import load_autoencoder

    return load_autoencoder(args.autoencoder)


def _latent_resolution(args: argparse.Namespace, autoencoder, planned: int) -> int:
    """A latent model's data is prepared at the size its autoencoder was trained at (its latent scale was
    measured there); another size asked for is refused with both named."""
    asked = args.resolution or planned
    if asked and asked != autoencoder.resolution:
        raise ConfigError(f"the autoencoder {args.autoencoder or ''} was trained at {autoencoder.resolution} px; "
                          f"{asked} px was asked for (drop --resolution, or train an autoencoder at {asked} px)")
    return autoencoder.resolution


def _codec(autoencoder, training, device):
    """The codec of a latent run, once the data's channels are known to be the autoencoder's."""
    if autoencoder is None:
        return None
    import torch

    from ..common.latent.codec import LatentCodec
    from ..common.training.trainer import default_device

    channels = list(training.tensors.schema.channels)
    if channels != list(autoencoder.schema.channels):
        raise ConfigError(f"the autoencoder was trained on channels {list(autoencoder.schema.channels)}; the data "
                          f"{training.source} has {channels}: train an autoencoder on this data's channels")
    return LatentCodec(autoencoder, torch.device(device) if device else default_device())


def _devices(args: argparse.Namespace, runtime) -> list[str]:
    from ..common.specs import RuntimeSpec
    from ..common.training.distributed import resolve_devices

    if args.devices and args.device:
        raise ConfigError("pass --device (one) or --devices (several), not both")
    if args.devices:  # checked as [runtime] devices is, so a typo is named before any process starts
        runtime = RuntimeSpec(devices=tuple(d.strip() for d in args.devices.split(",") if d.strip()))
    return resolve_devices(runtime.devices) if runtime.devices else []


def _train_and_report(trainer, training, data, holdout, checkpoint: Path, console, devices: list[str],
                      build, stopping) -> int:
    """devices: more than one trains data-parallel, each process making its trainer by ``build``; stopping:
    (Plateau or None, evaluate every this many steps)."""
    from ..client.site_data import HOLDOUT_FRACTION

    from ..common.training.early_stopping import train_until_plateau
    from ..common.training.on_devices import train_on_devices

    console.print(f"data {training.source}: {training.studies} studies -> {len(data)} examples of "
                  f"{list(data.schema.channels)} at {grid_text(data.spatial)}; model {trainer.trained.total / 1e6:.2f} "
                  f"M parameters on {trainer.device} (training {trainer.trained.describe()}); schedule "
                  f"{trainer.spec.schedule}")
    meta = {"data": {"source": training.source, "examples": len(data), "studies": training.studies}}
    if holdout is not None:
        meta["data"]["holdout"] = {"fraction": HOLDOUT_FRACTION, "seed": 0, "examples": len(holdout)}
    if len(devices) > 1:
        console.print(f"data-parallel on {len(devices)} devices: {', '.join(devices)} (each takes "
                      f"{trainer.recipe.batch_size // len(devices)} of every batch of {trainer.recipe.batch_size})")
        result, total = train_on_devices(devices, build, data, checkpoint=checkpoint, meta=meta, progress=True)
    elif stopping[0] is not None:
        plateau, every = stopping
        console.print(f"early stopping: held-out loss of the EMA model on {len(holdout)} examples every {every} "
                      f"steps, patience {plateau.patience}, at most {trainer.steps} steps")
        try:
            result = train_until_plateau(trainer, data, holdout, plateau, every, checkpoint, meta,
                                         say=lambda line: console.print(line, highlight=False))
        except ValueError as e:
            raise ConfigError(f"{checkpoint}: {e}") from None
        total, meta["early_stopping"] = trainer.step, plateau.record()
        console.print(f"kept the model of step {plateau.best[0]} (held-out loss {plateau.best[1]:.5f})"
                      + (f"; stopped after {plateau.patience} evaluations without improvement" if plateau.stopped
                         else f"; reached the cap of {trainer.steps} steps"))
    else:
        result = trainer.train(data, progress=True, checkpoint_path=checkpoint, checkpoint_meta=meta)
        total = trainer.step
    summary = {**asdict(result), "total_steps": total, "checkpoint": str(checkpoint), **meta}
    (checkpoint.parent / "train.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=f"trained {result.steps} steps (total {total})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("loss", "seconds", "images_per_second", "skipped_nonfinite"):
        value = summary[key]
        table.add_row("mean loss" if key == "loss" else key.replace("_", " "),
                      f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("checkpoint", str(checkpoint))
    console.print(table)
    return 0
