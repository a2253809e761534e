"""``meddiff generate``: samples from a trained model, optionally per class or given some channels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from typing import TYPE_CHECKING
from rich.table import Table
from rich.text import Text

from ..common.config import ConfigError
from ..common.diffusion.names import SAMPLER_NAMES
from .task_io import MODEL_HELP
from ..common.console import plain_console
from rich.console import Console

if TYPE_CHECKING:  # torch is imported where it is used: `meddiff --help` does not wait for it
    import torch



def add_parser(commands) -> None:
    p = commands.add_parser("generate", help="sample images from a trained model")
    p.add_argument("--model", help=MODEL_HELP.replace("--config", "--site-config"))
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--n-per-class", type=int, help="this many samples of every class (instead of --n)")
    p.add_argument("--class", dest="class_name", default="all",
                   help="class name, 'all' (cycle over the classes, the default) or 'none' (unconditional)")
    p.add_argument("--given", action="append", default=[], metavar="CHANNEL=FILE",
                   help="give a channel from an image file (.png, .npy, .nii.gz, .dcm); repeatable")
    p.add_argument("--sampler", default="ddim", choices=list(SAMPLER_NAMES))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--out", required=True, help="folder for samples.npz, grid.png and generate.json")
    p.add_argument("--audit-data", help="the site's training data (a path, or phantom) for the memorisation audit "
                                        "(default: the model's own training data when it is on this machine)")
    p.add_argument("--site-config", help="site.toml saying how to read --audit-data")
    p.add_argument("--audit-alpha", type=float, default=0.01,
                   help="flag samples closer to the training set than this quantile of held-out images")
    p.add_argument("--no-audit", action="store_true", help="skip the memorisation audit (never for export)")
    p.add_argument("--export", default="", metavar="FORMATS",
                   help="also write the kept samples as a data set: comma-separated npz,png,nifti,dicom "
                        "(synthetic DICOM: new UIDs, DERIVED/SECONDARY, marked SYNTHETIC)")
    p.add_argument("--to-pacs", action="store_true",
                   help="store the audited synthetic DICOM series in the PACS of --site-config ([pacs.destination], "
                        "else its [pacs]); needs --export dicom; never overwrites, recorded in the audit log")
    p.set_defaults(func=run)


def _labels(class_name: str, schema, n: int) -> torch.Tensor | None:
    import torch
    if class_name == "none" or not schema.num_classes:
        if class_name not in ("none", "all"):
            raise ConfigError(f"--class {class_name}: this model has no classes; drop --class")
        return None
    if class_name == "all":
        return torch.arange(n) % schema.num_classes
    if class_name not in schema.class_names:
        raise ConfigError(f"--class {class_name!r} is not one of the model's classes {list(schema.class_names)}")
    return torch.full((n,), schema.class_names.index(class_name), dtype=torch.long)


def _given(pairs: list[str], schema, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, *shape) condition values and (C,) bool for the ``CHANNEL=FILE`` pairs, prepared like training data
    (``shape``: the model's pixel grid, (H, W) or (D, H, W))."""
    import torch
    from ..common.data.single_image import read_image_file
    from ..common.data.transforms import prepare
    from ..common.schema import Example

    image = np.zeros((schema.num_channels, *(1,) * len(shape)), dtype=np.float32)
    available = np.zeros(schema.num_channels, dtype=bool)
    reads = {}
    for pair in pairs:
        channel, sep, file = pair.partition("=")
        if not sep or channel not in schema.channels:
            raise ConfigError(f"--given {pair!r}: expected CHANNEL=FILE with CHANNEL one of {list(schema.channels)}")
        reads[schema.index(channel)] = read_image_file(file)
    if reads:
        shapes = {a.shape for a in reads.values()}
        if len(shapes) > 1:
            raise ConfigError(f"--given images have different sizes {sorted(shapes)}; give co-registered images")
        image = np.zeros((schema.num_channels, *shapes.pop()), dtype=np.float32)
        for c, values in reads.items():
            image[c], available[c] = values, True
    depth = shape[0] if len(shape) == 3 else 0
    ready = prepare([Example(image=image, available=available)], schema, shape[-1], slices=False, depth=depth)[0]
    return torch.from_numpy(ready.image), torch.from_numpy(ready.available)


def _export_formats(args: argparse.Namespace) -> list[str]:
    from ..tasks.export import FORMATS

    formats = [f.strip() for f in args.export.split(",") if f.strip()]
    if sorted(set(formats) - set(FORMATS)):
        raise ConfigError(f"--export {args.export}: formats are {','.join(FORMATS)}")
    if args.to_pacs and ("dicom" not in formats or not args.site_config):
        raise ConfigError("--to-pacs stores the exported synthetic DICOM in the site's PACS: pass --export dicom and "
                          "--site-config site.toml (its [pacs] table)")
    if formats and args.no_audit:
        raise ConfigError("--export always runs the memorisation audit before data leaves the site; drop --no-audit")
    if args.n < 1 or args.steps < 1 or args.batch_size < 1 or (args.n_per_class is not None and args.n_per_class < 1):
        raise ConfigError("--n, --n-per-class, --steps and --batch-size must be >= 1")
    return formats


def _save(out: Path, images: np.ndarray, labels: np.ndarray, given, schema) -> Path:
    """samples.npz and a labelled grid of the first 16 samples; returns the grid's path."""
    from ..common.grid import example_grid
    from ..common.schema import Example

    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "samples.npz", **{c: images[:, i] for i, c in enumerate(schema.channels)},
                        labels=labels, given=given.numpy(), channels=np.asarray(schema.channels))
    shown = [Example(image=images[i], available=np.ones(schema.num_channels, dtype=bool),
                     label=int(labels[i]) if labels[i] >= 0 else None) for i in range(min(16, len(images)))]
    return example_grid(shown, schema, out / "grid.png")


def run(args: argparse.Namespace) -> int:
    from ..common.diffusion.loading import load_model
    from ..tasks.export import export
    from ..tasks.synthesis import synthesize

    formats = _export_formats(args)
    loaded = load_model(args.model, use_ema=not args.raw_weights, device=args.device, latent_ok=True)
    schema, size = loaded.schema, loaded.resolution
    if args.n_per_class is not None:
        if not schema.num_classes:
            raise ConfigError("--n-per-class: this model has no classes; use --n")
        args.n, args.class_name = args.n_per_class * schema.num_classes, "all"
    labels = _labels(args.class_name, schema, args.n)
    condition, given = _given(args.given, schema, loaded.spatial_shape)
    samples, seconds = synthesize(loaded, args.n, labels, condition, given, sampler=args.sampler, steps=args.steps,
                                  guidance=args.guidance, batch_size=args.batch_size, seed=args.seed)
    images, label_array = samples.numpy(), np.full(args.n, -1) if labels is None else labels.numpy()
    console = plain_console()
    audit = None if args.no_audit else _audit(args, loaded, images, console)
    if audit is not None:
        keep = ~np.asarray(audit.pop("flagged"), dtype=bool)
        images, label_array = images[keep], label_array[keep]
    out = Path(args.out)
    grid = _save(out, images, label_array, given, schema)
    report = {"model": str(args.model), "n": args.n, "sampler": args.sampler, "steps": args.steps,
              "guidance": args.guidance, "class": args.class_name, "given": args.given, "seed": args.seed,
              "ema": not args.raw_weights, "seconds": seconds, "images_per_second": args.n / seconds,
              "resolution": size, "device": str(loaded.device), "kept": int(len(images)), "audit": audit}
    if formats:
        report["export"] = export(images, label_array, schema, out, formats, str(args.model))
        if audit is None:
            if args.to_pacs:
                raise ConfigError("--to-pacs sends only audited samples, and the training data is not on this "
                                  "machine: pass --audit-data (the site's training data); the samples were written "
                                  f"to {out} only")
            console.print("exported without a memorisation audit: the training data is not on this machine",
                          style="yellow")
        if args.to_pacs:
            from ..client.pacs.store import store_synthetic

            report["pacs"] = store_synthetic(args.site_config, Path(report["export"]["dicom"]), str(args.model))
            for record in report["pacs"]:
                console.print(f"stored series {record['series_uid']} ({record['instances']} instances) in "
                              f"{record['destination']}; recorded in the site's audit log", highlight=False,
                              soft_wrap=True)
    if loaded.meta.get("data", {}).get("source") == "phantom" and not args.given:
        report["phantom_check"] = _phantom_check(images, label_array if labels is not None else None, size, console)
    (out / "generate.json").write_text(json.dumps(report, indent=2))
    console.print(f"{args.n} samples ({args.sampler}, {args.steps} steps) in {seconds:.1f} s "
                  f"({args.n / seconds:.1f} img/s) -> {out / 'samples.npz'}, {grid}")
    return 0


def _audit(args: argparse.Namespace, loaded, images: np.ndarray, console: Console) -> dict | None:
    """Near-copy audit of the samples against the training data, and the loss-based membership AUROC."""
    import torch
    from ..client.site_data import HOLDOUT_FRACTION, align_to_schema, holdout_split
    from ..common.config import DataConfig
    from ..common.site_config import load_site_config
    from ..common.data.training_set import load_training_set
    from ..privacy.memorisation import audit_near_copies, denoising_losses, membership_auroc

    source = args.audit_data or loaded.meta.get("data", {}).get("source", "")
    if source != "phantom" and not (source and Path(source).exists()):
        console.print("not audited for memorisation: pass --audit-data (the site's training data) "
                      "before these samples leave the site", style="yellow")
        return None
    config = load_site_config(args.site_config).data if args.site_config else DataConfig()
    try:
        data = align_to_schema(load_training_set(source, config, loaded.resolution).tensors, loaded.schema)
    except ValueError as error:
        raise ConfigError(f"--audit-data {source}: {error}; audit against the data this checkpoint was trained "
                          "on") from None
    if source == "phantom":  # the phantom's held-out images are fresh draws the model never saw
        train = data
        holdout = load_training_set(source, config, loaded.resolution, phantom_n=64, seed=12345).tensors
    else:  # the split `meddiff train` and the site's ClientApp both keep out (10 %, seed 0)
        train, holdout = holdout_split(data, HOLDOUT_FRACTION)
    if holdout is None:
        raise ConfigError(f"memorisation audit against {source}: {len(data)} image(s), too few to keep any out for "
                          "calibration; give more data with --audit-data, or --no-audit to keep the samples on this "
                          "machine unaudited")
    try:
        result = audit_near_copies(torch.from_numpy(images), train, holdout, args.audit_alpha)
    except ValueError as error:
        raise ConfigError(f"memorisation audit against {source} ({len(train)} training, {len(holdout)} held-out "
                          f"images): {error}; give more data with --audit-data, or --no-audit to keep the samples "
                          "on this machine unaudited") from error
    members = train.subset(torch.arange(min(len(train), 4 * len(holdout))))
    scored = (members, holdout) if loaded.codec is None else (  # a latent model denoises latents
        loaded.codec.encode_tensors(members), loaded.codec.encode_tensors(holdout))
    auroc = membership_auroc(*(denoising_losses(loaded.denoiser, part) for part in scored))
    summary = {**result.summary(), "membership_auroc": auroc, "members": len(members), "holdout": len(holdout),
               "data": source, "flagged": result.flagged.tolist()}
    console.print(f"memorisation audit against {source}: {int(result.flagged.sum())} of {len(images)} samples "
                  f"({100 * result.fraction_flagged:.1f} %) closer to a training image than {100 * (1 - args.audit_alpha):.0f} % "
                  f"of held-out images, dropped; loss-based membership AUROC {auroc:.3f} (0.5 = no signal)")
    return summary


def _phantom_check(images: np.ndarray, labels: np.ndarray | None, size: int, console: Console) -> dict:
    """Per-tissue statistics of the samples against fresh phantom data (a seed the model never saw)."""
    from ..common.data.phantom_statistics import compare, tissue_statistics
    from ..common.data.training_set import load_training_set

    real = load_training_set("phantom", resolution=size, phantom_n=256, seed=12345).tensors
    rows = compare(tissue_statistics(real.images.numpy(), real.labels.numpy()), tissue_statistics(images, labels))
    table = Table(title="phantom check: samples vs held-out phantom data")
    for column in ("statistic", "phantom", "samples", "tolerance", "within"):
        table.add_column(column)
    for key, real_value, generated, tolerance, ok in rows:
        table.add_row(key, f"{real_value:.3f}", f"{generated:.3f}", f"{tolerance:.2f}",
                      Text("yes", style="green") if ok else Text("no", style="red"))
    console.print(table)
    return {"rows": [dict(zip(("statistic", "phantom", "samples", "tolerance", "within"), r)) for r in rows],
            "all_within": all(r[4] for r in rows)}
