"""Deployment commands: ``meddiff certs``, ``meddiff coordinator start``, ``meddiff site start``."""

from __future__ import annotations

import argparse
from pathlib import Path


from ..common.config import ConfigError
from ..common.console import plain_console, shown_path

console = plain_console()


def add_parsers(commands, site_commands) -> None:
    certs = commands.add_parser("certs", help="create a CA, the coordinator's TLS certificate and site key pairs")
    certs.add_argument("--out", required=True, help="folder for ca.crt, server.pem/.key and sites/<name>[.pub]")
    certs.add_argument("--hosts", default="127.0.0.1,localhost",
                       help="names and IPs the coordinator is reached at (comma-separated)")
    certs.add_argument("--sites", default="", help="site names to create key pairs for (comma-separated)")
    certs.set_defaults(func=run_certs)

    coordinator = commands.add_parser("coordinator", help="coordinator commands").add_subparsers(
        dest="coordinator_command", required=True)
    start = coordinator.add_parser("start", help="start the SuperLink, register the sites' keys, run the federation")
    start.add_argument("--config", required=True, help="federation.toml")
    start.add_argument("--certs", help="folder written by `meddiff certs` (required unless --insecure)")
    start.add_argument("--host", default="127.0.0.1", help="address the SuperLink listens on")
    start.add_argument("--port", type=int, default=9092)
    start.add_argument("--insecure", action="store_true", help="no TLS, no authentication: loopback only")
    start.add_argument("--resume", action="store_true", help="continue the run in run_dir from its last round")
    start.add_argument("--wait-for-sites", type=float, default=600.0, help="seconds to wait for min_sites online")
    start.set_defaults(func=run_coordinator)

    site = site_commands.add_parser("start", help="start this site's SuperNode (foreground)")
    site.add_argument("--config", required=True, help="site.toml ([data] path and how to read it)")
    site.add_argument("--superlink", required=True, help="coordinator address HOST:PORT")
    site.add_argument("--ca", help="ca.crt from the coordinator (required unless --insecure)")
    site.add_argument("--key", help="this site's private key from `meddiff certs` (SuperNode authentication)")
    site.add_argument("--port", type=int, default=9094, help="local port of the SuperNode's own API")
    site.add_argument("--threads", type=int, default=0, help="CPU threads for training (default: all cores)")
    site.add_argument("--insecure", action="store_true", help="no TLS: loopback only")
    site.add_argument("--log-file", help="also append every log line here as JSON (time, level, source, message)")
    site.add_argument("--no-worker", action="store_true",
                      help="run each round in the process Flower starts for it, not in the site worker that keeps "
                           "torch, MONAI and the prepared data in memory (slower: 6-7 s more per message on 2 cores)")
    site.set_defaults(func=run_site)


def run_certs(args: argparse.Namespace) -> int:
    from ..common.certs import create_credentials

    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    if not hosts:
        raise ConfigError("--hosts needs at least one host name or IP")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the credentials")
    if (out / "ca.crt").exists():
        raise ConfigError(f"{out} already holds credentials (ca.crt): a new CA would lock out every site that trusts "
                          "the old one; nothing was overwritten (choose another --out)")
    paths = create_credentials(out, hosts, sites)
    console.print(f"CA {paths['ca']} (give it to every site); coordinator certificate {paths['server_cert']} for "
                  f"{hosts}; site keys in {Path(args.out) / 'sites'} (give each site its private key only)")
    return 0


def run_coordinator(args: argparse.Namespace) -> int:
    from ..server.deployment import (Credentials, ProcessGroup, flower_env, online_nodes,
                                     require_loopback_for_insecure, submit_run, superlink_command, wait_for,
                                     write_cli_config)
    from ..server.federation_config import load_federation_config
    from ..server.run_store import RunStore

    config = load_federation_config(args.config)
    address = f"{args.host}:{args.port}"
    require_loopback_for_insecure(address, args.insecure)
    credentials = None
    if not args.insecure:
        if not args.certs:
            raise ConfigError("--certs is required (create them with `meddiff certs`), or --insecure on loopback")
        credentials = Credentials(Path(args.certs))
        credentials.check()
    home = config.run_dir / ".flwr"
    client_address = f"127.0.0.1:{args.port}" if args.host in ("0.0.0.0", "::") else address
    with ProcessGroup() as group:
        group.start("superlink", superlink_command(args.host, args.port, config.run_dir / "superlink.db", credentials),
                    flower_env(home), config.run_dir / "logs" / "superlink.log")
        write_cli_config(home, client_address, credentials.ca if credentials else None)
        if credentials:
            keys = credentials.site_public_keys()
            if not keys:
                raise ConfigError(f"{credentials.folder / 'sites'} has no site public keys (*.pub)")
            for key in keys:
                wait_for(lambda: _register(home, key), 60, f"the SuperLink to register {key.name}")
            console.print(f"registered {len(keys)} site keys: {[k.stem for k in keys]}")
        need = config.settings.min_sites
        console.print(f"SuperLink on {address}; waiting for {need} sites (up to {args.wait_for_sites:.0f} s)")
        try:
            wait_for(lambda: online_nodes(home) >= need, args.wait_for_sites, f"{need} sites online", every=3.0)
        except TimeoutError:
            raise ConfigError(f"{online_nodes(home)} of the {need} sites (min_sites) came online within "
                              f"{args.wait_for_sites:.0f} s; the SuperLink was stopped. Start the sites (`meddiff site "
                              "start`), check they reach this address, or give --wait-for-sites more time") from None
        result = submit_run(home, Path(args.config), args.resume, timeout=10 * 24 * 3600)
        console.print(result.stdout[-4000:])
        if result.returncode != 0:
            console.print(f"the run failed: {result.stderr[-2000:]}", style="red")
            return 1
    registry = RunStore(config.run_dir).registry()
    if registry:
        console.print(f"{len(registry)} rounds; latest global model {shown_path(registry[-1]['path'])}")
    if (config.run_dir / "mlflow.db").exists():
        console.print(f"tracked in MLflow; to browse it: mlflow ui --backend-store-uri "
                      f"sqlite:///{shown_path(config.run_dir / 'mlflow.db')}", highlight=False, soft_wrap=True)
    return 0


def _register(home, key) -> bool:
    from ..server.deployment import register_site

    try:
        register_site(home, key, key.stem)
        return True
    except RuntimeError as e:
        return "already" in str(e).lower()


def run_site(args: argparse.Namespace) -> int:
    from ..client.daemon import SiteDaemon
    from ..client.site_paths import site_state_dir
    from ..client.worker_channel import worker_command
    from ..common.site_config import load_site_config
    from ..server.deployment import flower_env, require_loopback_for_insecure, supernode_command

    site = load_site_config(args.config)  # refuse a broken site.toml before connecting anywhere
    if site.data.source == "folder" and not site.data.path:
        raise ConfigError(f"{args.config}: [data] path is empty; set it to the site's data folder")
    if site.data.source != "folder":  # fetch now: a wrong url or password shows here, not in the first round
        from ..client.site_loading import site_data_folder

        site_data_folder(args.config, site, say=lambda line: console.print(line, highlight=False))
    require_loopback_for_insecure(args.superlink, args.insecure)
    if not args.insecure and not args.ca:
        raise ConfigError("--ca is required (the coordinator's ca.crt), or --insecure on loopback")
    home = site_state_dir(args.config)
    command = supernode_command(args.superlink, args.port, Path(args.config), None if args.insecure else Path(args.ca),
                                Path(args.key) if args.key else None, threads=args.threads)
    console.print(f"site {site.site_id}: connecting to {args.superlink} "
                  f"({'TLS' if not args.insecure else 'INSECURE, loopback'}), data "
                  f"{site.data.path or site.pacs.source.describe()}")
    worker = None if args.no_worker else worker_command(Path(args.config), args.threads)
    daemon = SiteDaemon(command, flower_env(home), home, args.superlink,
                        Path(args.log_file) if args.log_file else None, worker)
    return daemon.run()
