"""``meddiff plan``: the sites' data fingerprints -> one saved plan (a federation.toml) for the coordinator."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..common.config import ConfigError
from ..common.console import plain_console


def add_parser(commands) -> None:
    p = commands.add_parser("plan", help="plan a run from the sites' data fingerprints: resolution, channels, "
                                         "classes, network size and batch, written as a federation.toml")
    p.add_argument("--fingerprint", action="append", default=[], metavar="SITE=FILE",
                   help="a site's `meddiff site check DATA --json FILE` (repeat for every site; SITE= is optional)")
    p.add_argument("--data", action="append", default=[], metavar="PATH",
                   help="or fingerprint a data folder here (a simulation's, or a single site's)")
    p.add_argument("--gpu", action="store_true", help="the sites train on GPUs: allow resolutions above 64")
    p.add_argument("--volumes", action="store_true", help="a 3D model of 3D volumes (default: 2D, slices)")
    p.add_argument("--run-dir", default="runs/federation", help="the run directory the plan names")
    p.add_argument("--out", required=True, help="the federation.toml to write (never overwritten)")
    p.set_defaults(func=run)


def _fingerprints(args: argparse.Namespace) -> dict[str, dict]:
    from ..common.data.fingerprint import compute_fingerprint
    from ..common.data.loader import load_dataset
    from ..common.plan import read_fingerprint

    prints = {}
    for item in args.fingerprint:
        site, sep, path = item.partition("=")
        site, path = (site, path) if sep else (Path(item).stem, item)
        try:
            prints[site] = read_fingerprint(path)
        except (OSError, ValueError) as error:
            raise ConfigError(f"--fingerprint {path}: not a readable fingerprint ({error}); write one with "
                              "`meddiff site check DATA --json FILE`") from None
    for path in args.data:
        prints[Path(path).name] = compute_fingerprint(load_dataset(path, log_problems=False)).to_dict()
    return prints


def run(args: argparse.Namespace) -> int:
    from ..common.plan import plan_from_fingerprints

    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"{out} exists; nothing was overwritten (choose another --out)")
    try:
        plan = plan_from_fingerprints(_fingerprints(args), gpu=args.gpu, volumes=args.volumes)
    except (KeyError, TypeError) as error:
        raise ConfigError(f"a fingerprint lacks {error}: write it again with `meddiff site check DATA --json FILE`") \
            from None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(plan.federation_toml(args.run_dir))
    plain_console().print(f"planned {len(plan.sites)} site(s): channels {plan.channels}, classes "
                          f"{plan.class_names or '-'}, {plan.resolution} px {plan.ndim}D, network {list(plan.widths)}, "
                          f"batch {plan.batch_size} -> {out} (`meddiff coordinator start --config {out}`, "
                          f"`meddiff train --plan {out}`)")
    if plan.latent_note:
        plain_console().print(f"note: {plan.latent_note}", highlight=False)
    return 0
