"""Federation overhead: what a round costs beyond local training, bytes per site per round, simulation memory.

    .venv/bin/python benchmarks/federation_overhead.py                  # simulation, 2 sites, then 10 and 50 sites
    .venv/bin/python benchmarks/federation_overhead.py --deployment     # also real SuperLink/SuperNodes with TLS
    .venv/bin/python benchmarks/federation_overhead.py --deployment --no-simulation --memory-sites "" \
        --local-steps 600 --rounds 2                                     # the deployment at a realistic round length

The deployment runs twice: with the site worker (client/site_worker.py; what `meddiff site start` does) and
without it (each round in the ClientApp process Flower starts per message). Each deployed round also gets a table
of its parts, per site, from the timings the sites and the coordinator record (metrics.jsonl "timing").

Overhead = round wall time - the slowest site's local training time (the sites train in parallel: as many
sites as CPU actors). Bytes = the serialised ArrayRecord a site sends (the weights) per round; the global model
sent to it is the same size. Memory = the peak resident memory of the whole process tree (driver, Ray, actors),
sampled every 0.2 s from /proc.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from meddiff.common.wire import pack
from meddiff.server.federation import initial_weights
from meddiff.server.run_store import RunStore
from meddiff.simulations.runner import simulate
from meddiff.simulations.scenario import load_scenario, run_spec


def _tree_rss_bytes(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            pages = int(Path(f"/proc/{entry}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


class PeakMemory:
    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            time.sleep(0.2)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


DEPLOYMENT_NAMES = {"worker": "deployment (TLS), site worker", "no-worker": "deployment (TLS), ClientApp only"}


def _add_round(table: Table, engine: str, entry: dict) -> None:
    """One row: the round's wall time, its slowest site's training, and the rest (the overhead)."""
    total = entry["seconds"]
    train = max((m["seconds"] for m in entry["train"].values()), default=0.0)
    table.add_row(engine, "2", str(entry["round"]), f"{total:.1f}", f"{train:.1f}", f"{total - train:.1f}",
                  f"{100 * (total - train) / total:.1f}")


def _scenario(sites: int, steps: int, rounds: int, examples: int):
    base = load_scenario()
    return replace(base, data=replace(base.data, sites=sites, examples_per_site=examples, missing_channels=()),
                   federation=replace(base.federation, rounds=rounds, local_steps=steps, evaluate=False,
                                      min_sites=min(2, sites)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-sites", default="10,50")
    parser.add_argument("--deployment", action="store_true")
    parser.add_argument("--no-simulation", action="store_true", help="only the deployment rows (with --deployment)")
    parser.add_argument("--variants", default="worker,no-worker",
                        help="deployment variants: worker (rounds run in the site worker), no-worker (in the "
                             "ClientApp process Flower starts per message)")
    parser.add_argument("--keep", help="keep the deployments' folders (logs, run) here instead of a temporary one")
    args = parser.parse_args()
    console = Console(width=120)
    table = Table(title=f"federation overhead, {os.cpu_count()} CPUs, default phantom model (32 px, 1.1 M parameters)")
    for column in ("engine", "sites", "round", "round s", "slowest local training s", "overhead s", "overhead %"):
        table.add_column(column, justify="right")
    scenario = _scenario(2, args.local_steps, args.rounds, 32)
    weights = initial_weights(run_spec(scenario))
    sent = pack(weights).count_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        store = None if args.no_simulation else simulate(scenario, Path(tmp) / "sim")
        for entry in store.metrics() if store else []:
            _add_round(table, "simulation (Ray)", entry)
        parts = []
        for variant in (args.variants.split(",") if args.deployment else []):
            folder = Path(args.keep or tmp) / f"deployment-{variant}"
            entries = _deployment(folder, args.local_steps, args.rounds, worker=variant == "worker")
            name = DEPLOYMENT_NAMES[variant]
            for entry in entries:
                _add_round(table, name, entry)
                parts.append(parts_table(entry, f"{name}, {args.local_steps} local steps, round {entry['round']}"))
        memory = Table(title="simulation memory (1 round, 5 local steps, 8 examples per site)")
        for column in ("virtual sites", "peak RSS of the process tree"):
            memory.add_column(column, justify="right")
        for sites in [int(s) for s in args.memory_sites.split(",") if s]:
            with PeakMemory() as peak:
                simulate(_scenario(sites, 5, 1, 8), Path(tmp) / f"mem{sites}")
            memory.add_row(str(sites), f"{peak.peak / 2**30:.2f} GiB")
    console.print(table)
    for part in parts:
        console.print(part)
    console.print(f"bytes per site per round: {sent / 2**20:.2f} MiB up (the weights) and the same down; "
                  "metrics are a few hundred bytes")
    console.print(memory)


PARTS = [  # (row label, where the seconds come from: a site metric, or the coordinator's timing)
    ("coordinator: configure, pack, push", ("server", "send")),
    ("send -> ClientApp process (SuperNode pull, SuperExec poll)", ("site", "time-to-process")),
    ("process start -> handler (Python, Flower, imports, message)", ("site", "time-to-handler")),
    ("runner: worker hello, or torch + MONAI imports", ("site", "time-runner")),
    ("site worker channel (weights both ways)", ("site", "time-worker-transfer")),
    ("site data (cache or memory)", ("site", "time-data")),
    ("network setup (model, weights, optimizer)", ("site", "time-setup")),
    ("local training", ("site", "seconds")),
    ("packing the reply", ("site", "time-pack")),
    ("reply -> coordinator (guard, SuperNode, TLS, poll)", ("reply", "reply-transfer")),
    ("coordinator: aggregation after the last reply", ("server", "aggregate")),
]


def parts_table(entry: dict, title: str) -> Table:
    """Where one round's time went, per site (seconds); the rest is checkpointing and what no part measures."""
    timing, sites = entry.get("timing") or {}, sorted(entry["train"])
    table = Table(title=title)
    table.add_column("part of the round (s)", justify="left")
    for index, _ in enumerate(sites, start=1):
        table.add_column(f"site {index}", justify="right")
    for label, (kind, key) in PARTS:
        if kind == "server":
            values = [timing.get(key)] * len(sites)
        elif kind == "reply":
            values = [timing.get(key, {}).get(node) for node in sites]
        else:
            values = [entry["train"][node].get(key) for node in sites]
        table.add_row(label, *[("-" if v is None else f"{v:.2f}") for v in values])
    table.add_row("round total", *[f"{entry['seconds']:.2f}"] * len(sites))
    return table


def _deployment(tmp: Path, steps: int, rounds: int, worker: bool) -> list[dict]:
    """A real 2-site TLS federation on loopback; the round entries of its metrics.jsonl."""
    from meddiff.client.worker_channel import worker_command
    from meddiff.common.certs import create_credentials
    from meddiff.server.deployment import (Credentials, ProcessGroup, flower_env, free_port, online_nodes,
                                           register_site, submit_run, superlink_command, supernode_command,
                                           wait_for, write_cli_config)

    credentials = Credentials(tmp / "certs")
    create_credentials(credentials.folder, ["127.0.0.1"], ["site-a", "site-b"])
    home, port = tmp / "coordinator", free_port()
    address = f"127.0.0.1:{port}"
    config = tmp / "federation.toml"
    config.write_text(f'run_dir = "{tmp / "deployed"}"\n[schema]\nchannels = ["t1", "t2", "flair", "ct", "mask"]\n'
                      f'class_names = ["healthy", "lesion"]\nresolution = 32\n[federation]\nrounds = {rounds}\n'
                      f'local_steps = {steps}\nevaluate = false\n')
    with ProcessGroup() as group:
        group.start("superlink", superlink_command("127.0.0.1", port, tmp / "state.db", credentials),
                    flower_env(home), tmp / "superlink.log")
        write_cli_config(home, address, credentials.ca)
        time.sleep(8)
        for site in ("site-a", "site-b"):
            register_site(home, credentials.folder / "sites" / f"{site}.pub", site)
            site_config = tmp / site / "site.toml"
            site_config.parent.mkdir(parents=True, exist_ok=True)
            site_config.write_text(f'site_id = "{site}"\n[data]\npath = "phantom"\n')
            if worker:
                group.start(f"{site}-worker", worker_command(site_config, threads=1), flower_env(tmp / site),
                            tmp / f"{site}-worker.log")
            group.start(site, supernode_command(address, free_port(), site_config, credentials.ca,
                                                credentials.site_key(site), threads=1), flower_env(tmp / site),
                        tmp / f"{site}.log")
        wait_for(lambda: online_nodes(home) == 2, 120, "sites online")
        result = submit_run(home, config, resume=False, timeout=3600)
        if result.returncode != 0:
            raise RuntimeError(f"the deployment run failed (logs in {tmp}): {result.stderr[-1000:]}")
    return RunStore(tmp / "deployed").metrics()


if __name__ == "__main__":
    main()
