"""``meddiff site check``: a site's data fingerprint and every problem found, before it joins a federation."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from ..common.config import ConfigError
from ..common.console import plain_console


def add_parser(site_commands) -> None:
    check = site_commands.add_parser("check", help="fingerprint a data folder and list every problem found")
    check.add_argument("path", nargs="?", help="data folder (DICOM, NIfTI, PNG) or .npz file (default: the --config "
                                               "site's data: its [data] path, or what its PACS query matches)")
    check.add_argument("--config", help="site.toml ([data] section: channels, DICOM rules, mask values)")
    check.add_argument("--format", choices=["dicom", "nifti", "png", "npz"], help="skip format detection")
    check.add_argument("--json", help="also write the fingerprint as JSON to this file (outside the data folder)")
    check.add_argument("--width", type=int, default=None, help="table width in characters")
    check.add_argument("--suggest-config", action="store_true",
                       help="print a ready-to-paste [data] section for site.toml built from what the folder holds")
    check.set_defaults(func=run)


def data_config(args: argparse.Namespace):
    """site.toml's [data] table (or the defaults), with --format applied."""
    from ..common.config import DataConfig
    from ..common.site_config import load_site_config

    config = load_site_config(args.config).data if args.config else DataConfig()
    return replace(config, format=args.format) if args.format else config


def run(args: argparse.Namespace) -> int:
    """Fingerprint a site's data folder: reads only that folder, writes nothing into it."""
    from ..common.data.fingerprint import compute_fingerprint, render_fingerprint, render_problems
    from ..common.data.loader import load_dataset
    from ..common.data.problems import DataError
    from ..common.data.suggest import suggest_data_section

    console = plain_console(width=args.width)
    config = data_config(args)
    if not args.path:
        if not args.config:
            raise ConfigError("give the data folder to check, or --config site.toml")
        if config.source == "folder":
            args.path = config.path or None
        else:
            from .site_pacs import check_pacs

            args.path = check_pacs(args)
            if args.path is None:
                return 0
        if not args.path:
            raise ConfigError(f"{args.config}: [data] path is empty; set it, or give the data folder to check")
    if args.suggest_config:
        console.print(suggest_data_section(args.path, config), soft_wrap=True)
        return 0
    try:
        data = load_dataset(args.path, config, log_problems=False)
    except DataError as error:  # nothing loaded: still show every problem met on the way
        render_problems(error.problems, console)
        raise
    fingerprint = compute_fingerprint(data)
    render_fingerprint(fingerprint, console)
    if args.json:
        Path(args.json).write_text(json.dumps(fingerprint.to_dict(), indent=2, default=str))
    return 0
