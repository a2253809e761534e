"""Starting the real Flower processes of a deployment and stopping every one of them by its PID.

The SuperLink (coordinator) and SuperNodes (sites) are Flower's own binaries; this module builds their command
lines with TLS and SuperNode authentication on by default, writes the Flower CLI config inside the run's own
FLWR_HOME, registers the sites' public keys and submits the run. ``--insecure`` is accepted only for loopback
addresses, so a plaintext federation can never be started across a network by mistake.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..common.config import ConfigError

log = logging.getLogger(__name__)
BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode and flwr live beside our Python


def flower_env(home: Path) -> dict[str, str]:
    """Environment for Flower processes: their own FLWR_HOME, no telemetry, our venv's binaries first."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25",  # start a ClientApp/ServerApp within 0.25 s, not 1 s
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def require_loopback_for_insecure(address: str, insecure: bool) -> None:
    host = address.rsplit(":", 1)[0].strip("[]")
    if not insecure:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"--insecure is allowed only on loopback addresses, not {address}; create credentials "
                          "with `meddiff certs` and drop --insecure")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Credentials:
    """Paths written by ``meddiff certs``."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    def site_key(self, site: str) -> Path:
        return self.folder / "sites" / site

    def site_public_keys(self) -> list[Path]:
        return sorted((self.folder / "sites").glob("*.pub"))

    def check(self) -> None:
        for path in (self.ca, self.server_cert, self.server_key):
            if not path.is_file():
                raise ConfigError(f"{path} is missing; create the credentials with `meddiff certs --out {self.folder}`")


def superlink_command(host: str, port: int, state: Path, credentials: Credentials | None) -> list[str]:
    command = [str(BIN / "flower-superlink"), "--host", host, "--port", str(port), "--database", str(state),
               "--disable-runtime-dependency-installation"]
    if credentials is None:
        return command + ["--insecure"]
    return command + ["--ssl-ca-certfile", str(credentials.ca), "--ssl-certfile", str(credentials.server_cert),
                      "--ssl-keyfile", str(credentials.server_key), "--enable-supernode-auth"]


def supernode_command(superlink: str, port: int, site_config: Path, ca: Path | None, private_key: Path | None,
                      max_retries: int | None = None, threads: int = 0) -> list[str]:
    """threads: torch CPU threads of the site's training (0 = torch's default, all cores)."""
    node_config = f'site-config="{Path(site_config).resolve()}" threads={threads} superlink="{superlink}"'
    command = [str(BIN / "flower-supernode"), "--superlink", superlink, "--port", str(port),
               "--node-config", node_config]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    if ca is None:
        return command + ["--insecure"]
    command += ["--root-certificates", str(ca)]
    return command + (["--auth-supernode-private-key", str(private_key)] if private_key else [])


def write_cli_config(home: Path, address: str, ca: Path | None, name: str = "meddiff") -> None:
    """The Flower CLI's connection to our SuperLink, in this run's FLWR_HOME (never the user's)."""
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{ca.resolve()}"' if ca else "insecure = true"
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
                                      f'address = "{address}"\n{security}\n')


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


@dataclass
class ProcessGroup:
    """Processes we started; ``stop`` ends each by its PID (its whole session: Flower forks helpers)."""

    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    previous_sigterm: object = None

    def start(self, name: str, command: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_file, "ab")
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        self.processes[name] = process
        log.info("started %s (pid %d): %s", name, process.pid, " ".join(command))
        return process

    def stop(self, name: str, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(process.pid, s)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout)
                try:  # helpers of the session (flower-superexec) may outlive the leader
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            except subprocess.TimeoutExpired:
                continue
        log.info("stopped %s (pid %d)", name, process.pid)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def __enter__(self) -> "ProcessGroup":
        # a SIGTERM to us must still stop our children: turn it into SystemExit so __exit__ runs
        if threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        if self.previous_sigterm is not None:  # whoever called us gets their own handler back
            signal.signal(signal.SIGTERM, self.previous_sigterm)


def flwr(home: Path, *args: str, timeout: float = 120.0, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the Flower CLI against this run's FLWR_HOME."""
    return subprocess.run([str(BIN / "flwr"), *args], env=flower_env(home), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def register_site(home: Path, public_key: Path, name: str) -> str:
    """Allow the SuperNode holding this key to join (SuperNode authentication); raises RuntimeError if refused."""
    result = flwr(home, "supernode", "register", str(public_key), "--name", name, "--format", "json")
    if result.returncode != 0 or '"success": true' not in result.stdout:  # flwr may exit 0 on a failed call
        raise RuntimeError(f"registering {public_key} failed: {result.stdout[-500:]} {result.stderr[-500:]}")
    return result.stdout


def online_nodes(home: Path) -> int:
    result = flwr(home, "supernode", "list", "--format", "json", timeout=60)
    return result.stdout.count('"online"')


def wait_for(condition, timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def app_directory() -> Path:
    """The Flower app (a pyproject.toml with [tool.flwr.app]) that `flwr run` submits; it ships inside the package,
    so a coordinator installed from a wheel runs as one installed from the source tree."""
    folder = Path(__file__).resolve().parents[1] / "flower_app"
    if not (folder / "pyproject.toml").is_file():
        raise ConfigError(f"{folder / 'pyproject.toml'} is missing: this meddiff installation is incomplete; "
                          "reinstall it")
    return folder


def submit_run(home: Path, federation_config: Path, resume: bool, timeout: float) -> subprocess.CompletedProcess:
    """``flwr run`` with our app and streaming logs; returns when the run ends."""
    run_config = f'federation-config="{federation_config.resolve()}" resume={"true" if resume else "false"}'
    return flwr(home, "run", str(app_directory()), "meddiff", "--run-config", run_config, "--stream",
                timeout=timeout)
