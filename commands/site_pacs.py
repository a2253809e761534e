"""``meddiff site sync`` and the PACS half of ``meddiff site check``: what the site's [pacs] query matches, and
fetching what is new into the site's cache (client/pacs/)."""

from __future__ import annotations

import argparse

from rich.table import Table
from rich.text import Text

from ..common.config import ConfigError
from ..common.console import plain_console


def add_parser(site_commands) -> None:
    sync = site_commands.add_parser("sync", help="fetch what is new from the site's PACS into its cache")
    sync.add_argument("--config", required=True, help="site.toml with [data] source = \"dicomweb\" or \"dimse\"")
    sync.add_argument("--refetch", action="store_true",
                      help="forget the cache and fetch every matched instance again")
    sync.set_defaults(func=run_sync)


def _pacs_site(config: str):
    from ..common.site_config import load_site_config

    site = load_site_config(config)
    if site.data.source == "folder" or site.pacs is None:
        raise ConfigError(f"{config}: [data] source is \"folder\"; set source = \"dicomweb\" or \"dimse\" and a "
                          "[pacs] table to read the site's PACS")
    return site


def run_sync(args: argparse.Namespace) -> int:
    from ..client.pacs.sync import sync
    from ..common.data.fingerprint import render_problems

    _pacs_site(args.config)
    console = plain_console()
    report = sync(args.config, refetch=args.refetch)
    render_problems(report.problems, console)
    console.print(report.line(), highlight=False, soft_wrap=True)
    return 0


def check_pacs(args: argparse.Namespace) -> str | None:
    """Print what the query matches per series and how much of it is already in the site's cache; returns the
    cache folder to fingerprint when it holds a finished sync (else None)."""
    from ..client.pacs.sync import matched_series, pacs_cache

    site = _pacs_site(args.config)
    console = plain_console(width=args.width)
    series, cache = matched_series(site), pacs_cache(args.config, site)
    cached: dict[str, int] = {}
    for study_uid, series_uid in cache.committed().values():
        cached[series_uid] = cached.get(series_uid, 0) + 1
    table = Table(title=f"What [pacs.query] matches at {site.pacs.source.describe()}")
    for column in ("patient", "study", "modality", "series", "instances", "in cache"):
        table.add_column(column, justify="right" if column in ("instances", "in cache") else "left")
    for match in sorted(series, key=lambda m: (m.patient_id, m.study_uid, m.description)):
        table.add_row(Text(match.patient_id or "-"), Text(match.study_description or match.study_uid[-12:]),
                      Text(match.modality or "-"), Text(match.description or match.series_uid[-12:]),
                      str(match.instances or "?"), str(cached.get(match.series_uid, 0)))
    console.print(table)
    if not cache.has_data():
        console.print(f"nothing fetched yet: `meddiff site sync --config {args.config}` fetches the matched "
                      "instances into the site's cache", highlight=False, soft_wrap=True)
        return None
    console.print(f"the site's cache (last sync {cache.index()['last_sync']['finished']}) is checked below; "
                  f"`meddiff site sync --config {args.config}` fetches what is new", highlight=False, soft_wrap=True)
    return str(cache.instances_dir)
