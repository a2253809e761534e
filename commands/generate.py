"""``meddiff generate``: samples from a trained model, optionally per class or given some channels."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ..common.config import ConfigError

SAMPLERS = ["ddpm", "ddim", "euler-maruyama", "pc", "ode", "langevin", "dpm++2m"]


def add_parser(commands) -> None:
    p = commands.add_parser("generate", help="sample images from a trained model")
    p.add_argument("--model", required=True, help="model.pt written by `meddiff train` (or a global model)")
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--class", dest="class_name", default="all",
                   help="class name, 'all' (cycle over the classes, the default) or 'none' (unconditional)")
    p.add_argument("--given", action="append", default=[], metavar="CHANNEL=FILE",
                   help="give a channel from an image file (.png, .npy, .nii.gz, .dcm); repeatable")
    p.add_argument("--sampler", default="ddim", choices=SAMPLERS)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--out", required=True, help="folder for samples.npz, grid.png and generate.json")
    p.set_defaults(func=run)


def _labels(class_name: str, schema, n: int) -> torch.Tensor | None:
    if class_name == "none" or not schema.num_classes:
        if class_name not in ("none", "all"):
            raise ConfigError(f"--class {class_name}: this model has no classes; drop --class")
        return None
    if class_name == "all":
        return torch.arange(n) % schema.num_classes
    if class_name not in schema.class_names:
        raise ConfigError(f"--class {class_name!r} is not one of the model's classes {list(schema.class_names)}")
    return torch.full((n,), schema.class_names.index(class_name), dtype=torch.long)


def _given(pairs: list[str], schema, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) condition values and (C,) bool for the ``CHANNEL=FILE`` pairs, prepared like training data."""
    from ..common.data.single_image import read_image_file
    from ..common.data.transforms import prepare
    from ..common.schema import Example

    image = np.zeros((schema.num_channels, 1, 1), dtype=np.float32)
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
    ready = prepare([Example(image=image, available=available)], schema, resolution, slices=False)[0]
    return torch.from_numpy(ready.image), torch.from_numpy(ready.available)


def run(args: argparse.Namespace) -> int:
    from ..common.diffusion.generate import Conditioning, sample
    from ..common.diffusion.loading import load_model
    from ..common.grid import example_grid
    from ..common.progress import step_progress
    from ..common.schema import Example

    if args.n < 1 or args.steps < 1 or args.batch_size < 1:
        raise ConfigError("--n, --steps and --batch-size must be >= 1")
    loaded = load_model(args.model, use_ema=not args.raw_weights, device=args.device)
    schema, size = loaded.schema, loaded.resolution
    labels = _labels(args.class_name, schema, args.n)
    condition, given = _given(args.given, schema, size)
    generator = torch.Generator(loaded.device).manual_seed(args.seed)
    batches, start = [], time.perf_counter()
    with step_progress((args.n + args.batch_size - 1) // args.batch_size, description="sampling batches") as advance:
        for first in range(0, args.n, args.batch_size):
            b = min(args.batch_size, args.n - first)
            conditioning = Conditioning(
                condition.expand(b, *condition.shape).to(loaded.device),
                given.expand(b, -1).to(loaded.device),
                None if labels is None else labels[first:first + b].to(loaded.device))
            batches.append(sample(loaded.model, loaded.schedule, conditioning, sampler=args.sampler,
                                  steps=args.steps, guidance_scale=args.guidance, generator=generator).cpu())
            advance()
    seconds = time.perf_counter() - start
    images = torch.cat(batches).numpy()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label_array = np.full(args.n, -1) if labels is None else labels.numpy()
    np.savez_compressed(out / "samples.npz", **{c: images[:, i] for i, c in enumerate(schema.channels)},
                        labels=label_array, given=given.numpy(), channels=np.asarray(schema.channels))
    shown = [Example(image=images[i], available=np.ones(schema.num_channels, dtype=bool)) for i in range(min(16, args.n))]
    grid = example_grid(shown, schema, out / "grid.png")
    report = {"model": str(args.model), "n": args.n, "sampler": args.sampler, "steps": args.steps,
              "guidance": args.guidance, "class": args.class_name, "given": args.given, "seed": args.seed,
              "ema": not args.raw_weights, "seconds": seconds, "images_per_second": args.n / seconds,
              "resolution": size, "device": str(loaded.device)}
    console = Console()
    if loaded.meta.get("data", {}).get("source") == "phantom" and not args.given:
        report["phantom_check"] = _phantom_check(images, label_array if labels is not None else None, size, console)
    (out / "generate.json").write_text(json.dumps(report, indent=2))
    console.print(f"{args.n} samples ({args.sampler}, {args.steps} steps) in {seconds:.1f} s "
                  f"({args.n / seconds:.1f} img/s) -> {out / 'samples.npz'}, {grid}")
    return 0


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
                      "[green]yes" if ok else "[red]no")
    console.print(table)
    return {"rows": [dict(zip(("statistic", "phantom", "samples", "tolerance", "within"), r)) for r in rows],
            "all_within": all(r[4] for r in rows)}
