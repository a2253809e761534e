"""``meddiff site budget``: what this site has released under DP, and what is left of its budget."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from rich.table import Table
from ..common.console import plain_console


def add_parser(site_commands) -> None:
    budget = site_commands.add_parser("budget", help="print this site's privacy ledger and remaining budget")
    budget.add_argument("--config", required=True, help="site.toml ([privacy] section)")
    budget.add_argument("--ledger", help="a ledger file (default: the site's, beside site.toml)")
    budget.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..client.site_paths import ledger_path, site_state_dir
    from ..common.site_config import load_site_config
    from ..privacy.ledger import PrivacyLedger

    site = load_site_config(args.config)
    privacy = site.privacy
    path = args.ledger or ledger_path(site_state_dir(args.config), site.site_id)
    console = plain_console()
    if not Path(path).is_file():  # opening a ledger would create it
        console.print(f"site {site.site_id}: no privacy ledger at {path}: nothing has been released under DP")
        return 0
    ledger = PrivacyLedger(path, privacy.accountant)
    entries = ledger.entries()
    table = Table(title=f"privacy ledger of site {site.site_id} ({path})")
    for column in ("#", "when (UTC)", "run", "round", "unit", "trained", "steps", "sample rate", "noise",
                   "epsilon total", "status"):
        table.add_column(column, justify="right")
    for e in entries:
        when = datetime.fromtimestamp(e["created"], timezone.utc).strftime("%Y-%m-%d %H:%M")
        table.add_row(str(e["id"]), when, e["run"][:12], str(e["round"]), e["unit"], e["trained"] or "-",
                      str(e["steps"]), f"{e['sample_rate']:.4f}", f"{e['noise_multiplier']:.3f}",
                      f"{e['epsilon_total']:.4f}", e["status"] + (f" ({e['note']})" if e["note"] else ""))
    console.print(table)
    counted = [e for e in entries if e["status"] in ("reserved", "released")]
    delta = counted[-1]["delta"] if counted else privacy.delta or float("nan")
    spent = ledger.spent(delta) if counted else 0.0
    unit = counted[-1]["unit"] if counted else privacy.unit
    console.print(f"{unit}-level DP at site {site.site_id}: epsilon {spent:.4f} spent at delta {delta:.3g} "
                  f"({privacy.accountant.upper()} accountant, all runs composed; a reserved round counts as spent); "
                  f"budget {privacy.budget:g}, left {max(0.0, privacy.budget - spent):.4f}")
    return 0
