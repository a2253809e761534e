"""The site worker: one long-lived process per site, started by `meddiff site start` beside the SuperNode, that
keeps torch, MONAI and the site's prepared data in memory and runs each round the ClientApp hands it.

Why: Flower 1.42 starts a new `flwr-clientapp` process for every message and offers no long-lived ClientApp (its
subprocess and process isolation modes both start one per message; its warm executors serve other task types on
Kubernetes only). In that process, importing torch + MONAI and reading the prepared data cost 6-7 s of every round
on 2 cores. The ClientApp now imports neither: it hands the round to this process and waits.

- Channel: a Unix socket in the site's state folder (``.meddiff-site/worker.sock``, mode 0600), authenticated by
  HMAC with a random key written at start to ``.meddiff-site/worker.key`` (0600): Python's
  ``multiprocessing.connection``. Nothing listens on the network; both files are removed on exit.
- What stays as it was: the ClientApp still receives and answers every message, and its mods (the site guard with
  its code-hash check and audit log, SecAgg+, clipping) still wrap the round. The worker runs the site's installed
  meddiff; it reports the hash of the code it loaded, and the ClientApp uses it only when that equals its own (a
  worker started before an upgrade is not used until it is restarted).
- What it keeps between rounds: the prepared data (reloaded when site.toml or any data file changes). The network
  and its optimizer are built fresh each round, as in the ClientApp: a round starts from the global weights, and
  rebuilding costs milliseconds (the benchmark's "model setup" row).
- A round that fails is answered with its error and the worker serves the next; the ledger's release is marked
  only when the ClientApp says its reply is built (otherwise the reservation stays counted as spent).

    python -m meddiff.client.site_worker --site-config /etc/meddiff/site.toml --threads 4
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import time
from multiprocessing.connection import AuthenticationError, Connection, Listener
from pathlib import Path

import torch

from ..common.app_identity import app_hash
from ..common.config import ConfigError
from ..common.data.prepared_cache import cache_key
from ..common.run_spec import RunSpec
from ..common.site_config import load_site_config
from .local_runner import LocalRunner
from .site_data import SiteData
from .site_loading import load_site, site_data_folder, use_threads
from .site_paths import NO_SITE_CONFIG, site_state_dir

from .worker_channel import socket_and_key

log = logging.getLogger("meddiff.site_worker")


class SiteCache:
    """The site's data, kept between rounds; read again when site.toml or a data file changed."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, int, int], tuple[tuple, SiteData]] = {}

    def __call__(self, node_config: dict, spec: RunSpec) -> SiteData:
        use_threads(node_config)
        path = node_config.get("site-config")
        if not path:
            raise ValueError(NO_SITE_CONFIG)
        resolution, depth = spec.data_resolution, spec.data_depth
        key, fingerprint = (str(Path(path).resolve()), resolution, depth), self._fingerprint(str(path), resolution)
        cached = self.entries.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        site = load_site(str(path), resolution, depth)
        self.entries[key] = (fingerprint, site)
        return site

    @staticmethod
    def _fingerprint(path: str, resolution: int) -> tuple:
        """site.toml and the data files; a PACS site first fetches what is new (so new studies count)."""
        stat, config = os.stat(path), load_site_config(path)
        folder = config.data.path if config.data.source == "folder" else site_data_folder(path, config, True)
        data = cache_key(folder, config.data, resolution) if folder else ""
        return stat.st_mtime_ns, stat.st_size, data


def _write_key(path: Path) -> bytes:
    key = secrets.token_bytes(32)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(key)
    return key


def _answer(connection: Connection, runner: LocalRunner) -> None:
    """One request on one connection: hello, train (then wait for the release) or evaluate."""
    request = connection.recv()
    op = request.get("op")
    if op == "hello":
        connection.send({"hash": app_hash(), "pid": os.getpid()})
        return
    started = time.perf_counter()
    try:
        if op == "train":
            result = runner.train(request["config"], request["weights"], request["node_config"], request["run_id"])
            reply = {"weights": result.weights, "metrics": result.metrics, "refusal": result.refusal}
        elif op == "evaluate":
            result, reply = None, {"metrics": runner.evaluate(request["config"], request["weights"],
                                                              request["node_config"], request.get("run_id", ""))}
        else:
            raise ValueError(f"unknown request {op!r}")
    except Exception as error:  # the site's daemon never dies from one bad round: answer, log, serve the next
        log.exception("the round failed")
        connection.send({"error": f"{type(error).__name__}: {error}"})
        return
    connection.send({**reply, "seconds": time.perf_counter() - started})
    if op == "train" and not reply["refusal"]:
        try:
            if connection.recv().get("op") == "released":
                result.released()
        except EOFError:
            log.warning("the ClientApp ended before its reply was built: the round's privacy reservation, if any, "
                        "stays counted as spent")


def serve(site_config: Path, threads: int = 0) -> None:
    """Serve rounds until SIGTERM / SIGINT; the socket and key files are removed on the way out."""
    state = site_state_dir(site_config)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    socket_path, key_path = socket_and_key(state)
    listener = None
    try:  # a SIGTERM at any moment from here on still removes the key and the socket
        key = _write_key(key_path)
        socket_path.unlink(missing_ok=True)
        previous = os.umask(0o177)  # the socket file is created 0600
        try:
            listener = Listener(str(socket_path), family="AF_UNIX", authkey=key)
        finally:
            os.umask(previous)
        if threads > 0:
            torch.set_num_threads(threads)
        runner = LocalRunner(SiteCache())
        log.info("site worker ready (pid %d, code %s, %d threads): %s", os.getpid(), app_hash()[:12],
                 torch.get_num_threads(), socket_path)
        while True:
            try:
                connection = listener.accept()
            except (AuthenticationError, OSError, EOFError) as error:
                log.warning("refused a connection to the site worker: %s", error)
                continue
            with connection:
                try:
                    _answer(connection, runner)
                except (EOFError, OSError) as error:
                    log.warning("the ClientApp's connection ended: %s", error)
    finally:
        if listener is not None:
            listener.close()
        socket_path.unlink(missing_ok=True)
        key_path.unlink(missing_ok=True)
        log.info("site worker stopped")


def _exit(signum, frame) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meddiff.client.site_worker", description=__doc__.split("\n")[0])
    parser.add_argument("--site-config", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s : %(message)s", stream=sys.stdout)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)
    try:
        load_site_config(args.site_config)  # a broken site.toml is refused here, with its own message
    except (ConfigError, OSError) as error:
        print(f"site worker not started: {error}", file=sys.stderr)
        return 2
    serve(args.site_config, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
