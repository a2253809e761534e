"""The one console command, ``meddiff``: site admins, coordinators and researchers start everything here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console

from . import __version__
from .common.checkpoint import CheckpointError
from .common.config import ConfigError, DataConfig, load_site_config
from .common.data.problems import DataError

log = logging.getLogger("meddiff")


def _data_config(args: argparse.Namespace) -> DataConfig:
    config = load_site_config(args.config).data if getattr(args, "config", None) else DataConfig()
    if getattr(args, "format", None):
        config = replace(config, format=args.format)
    return config


def cmd_site_check(args: argparse.Namespace) -> int:
    """Fingerprint a site's data folder: reads only that folder, writes nothing into it."""
    from .common.data.fingerprint import compute_fingerprint, render_fingerprint
    from .common.data.loader import load_dataset

    data = load_dataset(args.path, _data_config(args), log_problems=False)
    fingerprint = compute_fingerprint(data)
    render_fingerprint(fingerprint, Console(width=args.width))
    if args.json:
        Path(args.json).write_text(json.dumps(fingerprint.to_dict(), indent=2, default=str))
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:
    """Write a phantom data set as a channel-layout .npz (loadable like any site's data) and a PNG grid."""
    from .common.data.phantom import phantom_dataset
    from .common.data.transforms import prepare
    from .common.grid import example_grid

    data = phantom_dataset(args.n, size=args.size, ndim=args.ndim, site=args.site, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {c: np.stack([e.image[i] for e in data.examples]) for i, c in enumerate(data.schema.channels)}
    np.savez_compressed(out / "phantom.npz", **arrays, labels=np.asarray([e.label for e in data.examples]),
                        patient=np.asarray([e.patient for e in data.examples]))
    ready = prepare(data.examples[:8], data.schema, args.size, slices=False)
    grid = example_grid(ready, data.schema, out / "phantom_grid.png")
    Console().print(f"wrote {out / 'phantom.npz'} ({args.n} examples, channels {list(data.schema.channels)}) "
                    f"and {grid}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the built-in data: 3 phantom hospitals train one model on the Flower Simulation Engine."""
    from .commands import simulate

    Console().rule("meddiff demo: 3 virtual hospitals (digital phantom), federated training, report")
    return simulate.run(argparse.Namespace(scenario=None, out=str(Path(args.out) / "phantom"), resume=False,
                                           rounds=args.rounds, local_steps=None, data=None, sample_every=2,
                                           verbose_flower=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meddiff", description=__doc__)
    parser.add_argument("--version", action="version", version=f"meddiff {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    commands = parser.add_subparsers(dest="command", required=True)

    site = commands.add_parser("site", help="site admin commands").add_subparsers(dest="site_command", required=True)
    check = site.add_parser("check", help="fingerprint a data folder and list every problem found")
    check.add_argument("path", help="data folder (DICOM, NIfTI, PNG) or .npz file")
    check.add_argument("--config", help="site.toml ([data] section: channels, DICOM rules, mask values)")
    check.add_argument("--format", choices=["dicom", "nifti", "png", "npz"], help="skip format detection")
    check.add_argument("--json", help="also write the fingerprint as JSON to this file (outside the data folder)")
    check.add_argument("--width", type=int, default=None, help="table width in characters")
    check.set_defaults(func=cmd_site_check)

    phantom = commands.add_parser("phantom", help="write the built-in digital phantom as a data set")
    phantom.add_argument("--out", default="phantom_out")
    phantom.add_argument("--n", type=int, default=32)
    phantom.add_argument("--size", type=int, default=64)
    phantom.add_argument("--ndim", type=int, choices=[2, 3], default=2)
    phantom.add_argument("--site", type=int, default=0)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.set_defaults(func=cmd_phantom)

    demo = commands.add_parser("demo", help="the main job on the built-in phantom: a 3-hospital simulation")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument("--rounds", type=int, default=None, help="override the scenario's rounds")
    demo.set_defaults(func=cmd_demo)

    from .commands import (bench, budget, denoise, deploy, detect_anomalies, generate, reconstruct, segment, simulate,
                           site_admin,
                           super_resolve, train, translate)
    deploy.add_parsers(commands, site)
    budget.add_parser(site)
    site_admin.add_parsers(site)
    train.add_parser(commands)
    generate.add_parser(commands)
    detect_anomalies.add_parser(commands)
    denoise.add_parser(commands)
    super_resolve.add_parser(commands)
    reconstruct.add_parser(commands)
    segment.add_parser(commands)
    translate.add_parser(commands)
    simulate.add_parser(commands)
    bench.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "model", "") is None:  # a task command without --model: the site's newest global model
            from .commands.task_io import newest_site_model

            args.model = str(newest_site_model(getattr(args, "config", None) or getattr(args, "site_config", None)))
        return args.func(args)
    except (DataError, ConfigError, CheckpointError) as e:
        print(f"meddiff: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
