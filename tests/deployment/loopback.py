"""A real federation on 127.0.0.1 for tests: SuperLink with TLS and SuperNode authentication, registered sites
(and optionally strangers with keys nobody registered); every process is stopped by its PID on the way out."""

from __future__ import annotations

import subprocess
from pathlib import Path

from meddiff.client.worker_channel import worker_command
from meddiff.common.certs import create_credentials
from meddiff.server.deployment import (Credentials, ProcessGroup, flower_env, flwr, free_port, online_nodes,
                                       register_site, superlink_command, supernode_command, wait_for,
                                       write_cli_config)
from tests.conftest import TINY_MODEL_TABLES

FEDERATION = """
run_dir = "{run_dir}"
[schema]
channels = ["t1", "t2", "flair", "ct", "mask"]
class_names = ["healthy", "lesion"]
resolution = 16
[federation]
rounds = {rounds}
local_steps = {steps}
min_sites = 2
timeout = 300
evaluate = {evaluate}
{extra}
""" + TINY_MODEL_TABLES


class Federation:
    def __init__(self, tmp: Path, sites: list[str], strangers: tuple[str, ...] = (), worker: bool = True) -> None:
        """worker: each site also runs its site worker, as `meddiff site start` does (False: the ClientApp Flower
        starts per message runs the round itself)."""
        self.tmp, self.sites, self.group, self.worker = tmp, sites, ProcessGroup(), worker
        self.credentials = Credentials(tmp / "certs")
        create_credentials(self.credentials.folder, ["127.0.0.1", "localhost"], [*sites, *strangers])
        self.home, self.port = tmp / "coordinator", free_port()
        self.address = f"127.0.0.1:{self.port}"

    def start_superlink(self) -> None:
        self.group.start("superlink", superlink_command("127.0.0.1", self.port, self.tmp / "state.db",
                                                        self.credentials),
                         flower_env(self.home), self.tmp / "logs" / "superlink.log")
        write_cli_config(self.home, self.address, self.credentials.ca)
        wait_for(lambda: '"success": true' in flwr(self.home, "supernode", "list", "--format", "json",
                                                   timeout=30).stdout, 60, "the SuperLink")

    def start_site(self, site: str, max_retries: int | None = None) -> subprocess.Popen:
        self.site_config(site).parent.mkdir(parents=True, exist_ok=True)
        self.site_config(site).write_text(f'site_id = "{site}"\n[data]\npath = "phantom"\n')
        if self.worker:
            self.group.start(f"{site}-worker", worker_command(self.site_config(site), threads=1),
                             flower_env(self.tmp / site), self.log(f"{site}-worker"))
        return self.group.start(site, supernode_command(self.address, free_port(), self.site_config(site),
                                                        self.credentials.ca, self.credentials.site_key(site),
                                                        max_retries=max_retries, threads=1),
                                flower_env(self.tmp / site), self.log(site))

    def start(self) -> "Federation":
        self.start_superlink()
        for site in self.sites:  # only these keys are registered
            register_site(self.home, self.credentials.folder / "sites" / f"{site}.pub", site)
            self.start_site(site)
        wait_for(lambda: online_nodes(self.home) == len(self.sites), 120, "all sites online")
        return self

    def site_config(self, site: str) -> Path:
        """Each site in its own folder: its state (.meddiff-site: ledger, audit log, models) lives beside it."""
        return self.tmp / "sites" / site / "site.toml"

    def log(self, name: str) -> Path:
        return self.tmp / "logs" / f"{name}.log"

    def config(self, name: str, rounds: int, steps: int, evaluate: bool = False, extra: str = "",
               tables: str = "") -> Path:
        """federation.toml for a run; ``extra``: more lines of its [federation] table; ``tables``: more tables."""
        path = self.tmp / f"{name}.toml"
        path.write_text(FEDERATION.format(run_dir=self.tmp / name, rounds=rounds, steps=steps,
                                          evaluate=str(evaluate).lower(), extra=extra) + tables)
        return path
