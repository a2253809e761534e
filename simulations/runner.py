"""``meddiff simulate``: a scenario on the Flower Simulation Engine (Ray), one virtual SuperNode per hospital."""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path

import torch

from ..client.client_app import make_client_app
from ..client.local_runner import LocalRunner
from ..server.run_store import RunStore
from ..server.server_app import make_server_app
from .scenario import Scenario, run_spec, site_partitions

log = logging.getLogger(__name__)


def _site_provider(scenario: Scenario, run_dir: Path):
    def provide(node_config, spec):
        torch.set_num_threads(scenario.data.threads_per_site)
        _, sites = site_partitions(scenario)
        partition = int(node_config["partition-id"])
        return replace(sites[partition], privacy=scenario.privacy, runtime=scenario.runtime,
                       ledger_path=run_dir / "privacy" / f"site-{partition}.sqlite")
    return provide


def gpu_share(gpus: int, sites: int) -> float:
    """The GPUs each virtual site asks Ray for: all sites train at once, sharing the machine's GPUs. Ray hides
    every GPU from a site that asks for none (it empties CUDA_VISIBLE_DEVICES), so on a GPU machine each site
    must ask for its fraction."""
    return 0.0 if gpus == 0 else min(1.0, gpus / max(1, sites))


def _write_sites(scenario: Scenario, run_dir: Path) -> None:
    """What each virtual hospital holds (for the report): sizes, labels, channels."""
    schema, sites = site_partitions(scenario)
    summary = []
    for index, site in enumerate(sites):
        labels = site.train.labels.tolist() + (site.holdout.labels.tolist() if site.holdout is not None else [])
        names = schema.class_names
        counts = {names[k] if 0 <= k < len(names) else "unlabelled": labels.count(k) for k in sorted(set(labels))}
        present = site.train.available.any(dim=0).tolist()
        summary.append({"site": f"site-{index}", "train": len(site.train),
                        "holdout": len(site.holdout) if site.holdout is not None else 0, "labels": counts,
                        "channels": [c for c, p in zip(schema.channels, present) if p],
                        "missing": [c for c, p in zip(schema.channels, present) if not p]})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "sites.json").write_text(json.dumps(summary, indent=2))


def simulate(scenario: Scenario, run_dir: str | Path, resume: bool = False, verbose: bool = False) -> RunStore:
    """Run the scenario's rounds; returns the run's store (checkpoints, registry, metrics)."""
    from flwr.simulation import run_simulation

    run_dir = Path(run_dir).resolve()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_HOME", str(run_dir / ".flwr"))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    spec = run_spec(scenario)
    if not resume:
        _write_sites(scenario, run_dir)
    server_app = make_server_app(spec, scenario.federation, run_dir, resume, scenario.autoencoder)
    runner = LocalRunner(_site_provider(scenario, run_dir))
    client_app = make_client_app(lambda context: runner)
    threads = scenario.data.threads_per_site
    cores = max(1, os.cpu_count() or 1)
    # every virtual site trains at once and the OS shares the cores: with 3 sites on 2 cores, no site waits for a
    # free core while the others finish (a round is as long as 1.5 sites' work, not 2)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend = {"client_resources": {"num_cpus": threads, "num_gpus": gpu_share(gpus, scenario.data.sites)},
               "init_args": {"num_cpus": max(cores, threads * scenario.data.sites), "num_gpus": gpus,
                             "include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": verbose}}
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=scenario.data.sites,
                       backend_config=backend, verbose_logging=verbose)
    finally:  # Flower and Ray install their own handlers; the caller's are put back
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    store = RunStore(run_dir)
    if not store.registry():
        raise RuntimeError(f"the simulation ended without completing a round; see the log above ({run_dir})")
    return store
