"""A site admin's everyday commands: ``meddiff site init | status | models | audit``."""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path


from ..common.config import ConfigError
from ..common.console import plain_console

console = plain_console()

SITE_TEMPLATE = '''# site.toml: how this hospital takes part in meddiff federated training.
# Everything the daemon keeps (privacy ledger, audit log, delivered models, status) is written beside this
# file, in .meddiff-site/. See docs/site-admin.md.

# A short name for this site; it appears in logs and in the privacy ledger (not sent to the coordinator).
site_id = "{site_id}"

[data]
# The site's images: a folder of DICOM series, NIfTI (images/ + labels/), PNG (images/ + masks/) or a .npz.
# `meddiff site check PATH --config site.toml` reads it and lists every problem, writing nothing.
path = "{data}"
# format = "auto"              # auto, dicom, nifti, png, npz
# channels = ["t1", "t2"]      # schema channel names in model order (default: what the format provides)
# mask_values = [150, 200]     # raw mask values that become labels 1..K (default: any non-zero = 1)
# resolution = 0               # 0 = the run's resolution
# source = "folder"            # or "dicomweb" / "dimse": fetch the studies [pacs.query] matches from the PACS
#                              # (remove path then); `meddiff site sync --config site.toml` fetches what is new

# [pacs]                       # the site's PACS (only with [data] source = "dicomweb" or "dimse")
# url = "https://pacs.hospital.local/dicom-web"   # DICOMweb base URL
# username_env = "MEDDIFF_PACS_USER"              # credentials: the NAMES of environment variables holding them
# password_env = "MEDDIFF_PACS_PASSWORD"
# ca_bundle = ""               # TLS: the hospital CA's certificate file
# host = "pacs.hospital.local" # DIMSE: host, port and the PACS's AE title; calling_aet is this site's
# port = 104
# called_aet = "PACS"
# calling_aet = "MEDDIFF"
# timeout_s = 30
# [pacs.query]                 # which studies to train on; empty keys match everything
# modality = "MR"
# study_description = "*BRAIN*"
# study_date = "20200101-20241231"
# study_uids = []
# [pacs.destination]           # where `meddiff generate --to-pacs` stores synthetic series (default: the same PACS)
# protocol = "dicomweb"
# url = "https://research-pacs.hospital.local/dicom-web"

[privacy]
# Differential privacy at this site (DP-SGD with Opacus). The site decides, not the coordinator.
enabled = false
# target_epsilon = 10.0        # each run is trained to this epsilon
# budget_epsilon = 0.0         # the ledger refuses any round past this total over all runs (0 = target_epsilon)
# unit = "patient"             # protect each patient as a whole (per image where the data names no patients),
#                              # or "example" for each image/slice; `meddiff site check` shows which applies
# delta = 0.0                  # 0 = 1 / (10 N) for N patients (or images)
# accountant = "rdp"           # rdp or prv

[runtime]
# This site's own hardware switches (never set by the coordinator): each "auto" (on for CUDA), "on" or "off".
# precision = "auto"           # auto = bf16 autocast on CUDA, fp32 on CPU; or fp32, bf16
# compile = "auto"             # torch.compile for long training calls

[tracking]
# The site's own experiment tracker (MLflow): its losses, images/s and epsilon per round, for its eyes only.
enabled = false
# uri = ""                     # "" = a local store beside this file (.meddiff-site/mlflow.db); or your MLflow server

[trust]
# The meddiff code this site approved: the hash of the installed version when this file was written.
# After an upgrade the daemon refuses to train until you approve the new hash (`meddiff site status` shows it).
app_hash = "{app_hash}"
# initial_models = []          # SHA-256 of each starting model you accept ("scratch": untrained); empty = any
# autoencoders = []            # SHA-256 of each autoencoder a latent run may encode your images with ("pixel": none)
# Refuse a coordinator that runs other meddiff code than this site.
same_app_as_coordinator = true
'''


def add_parsers(site_commands) -> None:
    init = site_commands.add_parser("init", help="write a commented site.toml")
    init.add_argument("--out", default="site.toml", help="where to write it (never overwritten)")
    init.add_argument("--site-id", default="site", help="a short name for this site")
    init.add_argument("--data", default="", help="the site's data folder")
    init.set_defaults(func=run_init)

    status = site_commands.add_parser("status", help="connection, current run and round, data, budget left")
    status.add_argument("--config", required=True, help="site.toml")
    status.set_defaults(func=run_status)

    models = site_commands.add_parser("models", help="list the global models delivered to this site")
    models.add_argument("--config", required=True, help="site.toml")
    models.set_defaults(func=run_models)

    audit = site_commands.add_parser("audit", help="print and verify this site's audit log")
    audit.add_argument("--config", required=True, help="site.toml")
    audit.add_argument("--last", type=int, default=20, help="print the last N events (0 = none, only verify)")
    audit.set_defaults(func=run_audit)


def run_init(args: argparse.Namespace) -> int:
    from ..common.app_identity import app_hash
    from ..common.site_config import load_site_config

    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"{out} exists; nothing was overwritten (choose another --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(SITE_TEMPLATE.format(site_id=args.site_id, data=args.data, app_hash=app_hash()))
    load_site_config(out)  # what we write must load
    console.print(f"wrote {out}: set its [data] path, then check the data with `meddiff site check PATH --config "
                  f"{out}`", soft_wrap=True, highlight=False)
    return 0


def _when(seconds: float | None) -> str:
    if not seconds:
        return "never"
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({time.time() - seconds:.0f} s ago)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def run_status(args: argparse.Namespace) -> int:
    from ..client.audit import AuditLog
    from ..client.model_store import ModelStore
    from ..client.site_paths import (audit_path, daemon_path, ledger_path, models_dir, read_json, site_state_dir,
                                     status_path)
    from ..common.app_identity import app_hash, app_version
    from ..common.site_config import load_site_config
    from ..common.data.prepared_cache import data_fingerprint

    site = load_site_config(args.config)
    state = site_state_dir(args.config)
    daemon, contact = read_json(daemon_path(state)), read_json(status_path(state))
    running = bool(daemon.get("pid")) and _alive(int(daemon["pid"])) and daemon.get("state") != "stopped"
    daemon_line = (f"running, pid {daemon['pid']}, since {_when(daemon.get('started'))}" if running
                   else f"not running (last state: {daemon.get('state', 'never started')})")
    stored = ModelStore(models_dir(state)).entries()
    verification = AuditLog(audit_path(state)).verify()
    pinned = site.trust.app_hash
    approval = "" if not pinned else " (approved)" if pinned == app_hash() else f" (NOT the approved {pinned})"
    rows = [
        ("daemon", daemon_line),
        ("coordinator", str(daemon.get("superlink") or contact.get("peer") or "-")),
        ("connection", str(daemon.get("connection", "-")) if running else "-"),
        ("last contact", _when(contact.get("last_contact"))),
        ("current run / round", f"{contact.get('run', '-')} / {contact.get('round', '-')} "
                                f"({contact.get('message_type', '-')})"),
        ("data", f"{site.data.path or '(not set)'}: {data_fingerprint(site.data.path) if site.data.path else '-'}"),
        ("privacy", _budget_line(site, ledger_path(state, site.site_id))),
        ("models", f"{len(stored)} stored; newest {stored[-1]['file']}" if stored else "none delivered yet"),
        ("audit log", f"{verification.lines} events, chain {'intact' if verification.ok else 'BROKEN'}"),
        ("code", f"meddiff {app_version()}, hash {app_hash()}{approval}"),
    ]
    console.print(f"site {site.site_id} ({args.config})", soft_wrap=True)
    for name, value in rows:  # one line each: easy to read, grep and paste into a ticket
        console.print(f"  {name + ':':<21}{value}", soft_wrap=True, highlight=False)
    return 0


def _budget_line(site, ledger_file: Path) -> str:
    if not site.privacy.enabled:
        return "DP off at this site"
    if not ledger_file.is_file():
        return f"DP on; nothing released yet; budget epsilon {site.privacy.budget:g}"
    from ..privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger(ledger_file, site.privacy.accountant)
    counted = [e for e in ledger.entries() if e["status"] in ("reserved", "released")]
    if not counted:
        return f"DP on; nothing released yet; budget epsilon {site.privacy.budget:g}"
    spent = ledger.spent(counted[-1]["delta"])
    return (f"{counted[-1]['unit']}-level epsilon {spent:.3f} spent of {site.privacy.budget:g} "
            f"(delta {counted[-1]['delta']:.2g}, "
            f"{site.privacy.accountant.upper()}); left {max(0.0, site.privacy.budget - spent):.3f}")


def run_models(args: argparse.Namespace) -> int:
    from ..client.model_store import ModelStore
    from ..client.site_paths import models_dir, site_state_dir
    from ..common.site_config import load_site_config

    load_site_config(args.config)  # a wrong path or a broken site.toml says so, instead of "no model yet"
    store = ModelStore(models_dir(site_state_dir(args.config)))
    entries = store.entries()
    if not entries:
        console.print(f"no model in {store.folder} yet: the coordinator delivers one at the end of each run")
        return 0
    console.print(f"{len(entries)} models delivered to this site ({store.folder}); task commands use the newest "
                  "(the last line)", soft_wrap=True)
    for e in entries:
        privacy = e.get("privacy") or {}
        per_site = privacy.get("per_site") or privacy.get("sample_level_per_site") or {}  # the older key
        epsilons = [p.get("epsilon") for p in per_site.values()]
        loss = (e.get("metrics") or {}).get("eval_loss")
        when = datetime.fromtimestamp(e["received"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        console.print(f"  {e['file']}  received {when}  run {e['run']}  round {e['round']}/{e.get('rounds')}"
                      f"{' (final)' if e.get('final') else ''}  {len(e.get('sites') or [])} sites  "
                      f"eval loss {'-' if loss is None else f'{loss:.4f}'}  site DP epsilon "
                      f"{', '.join(f'{x:.2f}' for x in epsilons if x is not None) or '-'}  started from "
                      f"{((e.get('initial_model') or {}).get('sha256') or 'scratch')[:16]}",
                      soft_wrap=True, highlight=False)
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from ..client.audit import AuditLog
    from ..client.site_paths import audit_path, site_state_dir
    from ..common.site_config import load_site_config

    load_site_config(args.config)
    log = AuditLog(audit_path(site_state_dir(args.config)))
    records = log.records()
    if not log.path.exists():
        console.print(f"no audit log at {log.path} yet: it starts with the daemon's first start")
        return 0
    if args.last:
        console.print(f"audit log {log.path}: the last {min(args.last, len(records))} of {len(records)} events",
                      soft_wrap=True)
        for r in records[-args.last:]:
            detail = r.get("reason") or json.dumps(r.get("metrics", {}), default=str)
            where = f"run {r['run']} round {r['round']} {r['message_type']}" if r.get("message_type") else ""
            sent = f"{r['bytes']} bytes" if "bytes" in r else ""
            console.print(f"  #{r.get('seq')} {str(r.get('time', ''))[:23]} {r.get('event')} {where} {sent} {detail}",
                          soft_wrap=True, highlight=False)
    verification = log.verify()
    if verification.ok:
        console.print(f"audit chain intact: {verification.lines} events; last hash {verification.last_hash}")
        return 0
    console.print(f"audit chain BROKEN at line {verification.first_broken} of {log.path}: "
                  f"{verification.reason}", style="red")
    return 1
