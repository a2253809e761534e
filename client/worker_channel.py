"""The ClientApp's side of the site worker (client/site_worker.py): find it, check it runs our code, hand it a
round. Torch-free: this runs in the process Flower starts for every message."""

from __future__ import annotations

import logging
import sys
import time
from multiprocessing.connection import AuthenticationError, Client, Connection
from pathlib import Path

import numpy as np

from ..common.app_identity import app_hash
from .round_result import TrainResult

log = logging.getLogger(__name__)


def socket_and_key(state_dir: Path) -> tuple[Path, Path]:
    return state_dir / "worker.sock", state_dir / "worker.key"


def worker_command(site_config: Path, threads: int = 0) -> list[str]:
    """The command that starts this site's worker (the daemon and the benchmark start it; users need not)."""
    return [sys.executable, "-m", "meddiff.client.site_worker", "--site-config", str(Path(site_config).resolve()),
            "--threads", str(threads)]


class WorkerFailed(RuntimeError):
    """The worker answered a round with an error (its log has the details)."""


class WorkerRunner:
    """Runs this site's rounds in its worker; ``connect`` returns None when there is none to use."""

    def __init__(self, socket_path: Path, key: bytes) -> None:
        self.socket_path, self.key = socket_path, key

    @classmethod
    def connect(cls, state_dir: Path) -> "WorkerRunner | None":
        socket_path, key_path = socket_and_key(state_dir)
        if not socket_path.exists():
            return None
        try:
            runner = cls(socket_path, key_path.read_bytes())
            with runner._open() as connection:
                connection.send({"op": "hello"})
                hello = connection.recv()
        except (OSError, EOFError, AuthenticationError) as error:
            log.warning("the site worker at %s does not answer (%s); this round runs in the ClientApp", socket_path,
                        error)
            return None
        if hello.get("hash") != app_hash():
            log.warning("the site worker (pid %s) runs other meddiff code (%s) than this ClientApp (%s): restart "
                        "`meddiff site start`; this round runs in the ClientApp", hello.get("pid"),
                        str(hello.get("hash"))[:12], app_hash()[:12])
            return None
        return runner

    def _open(self) -> Connection:
        return Client(str(self.socket_path), family="AF_UNIX", authkey=self.key)

    def _call(self, connection: Connection, request: dict) -> tuple[dict, float]:
        started = time.perf_counter()
        connection.send(request)
        reply = connection.recv()
        if "error" in reply:
            raise WorkerFailed(f"the site worker failed this round: {reply['error']}")
        return reply, max(0.0, time.perf_counter() - started - reply["seconds"])

    def train(self, config: dict, weights: np.ndarray, node_config: dict, run_id: str) -> TrainResult:
        connection = self._open()
        try:
            reply, transfer = self._call(connection, {"op": "train", "config": config, "weights": weights,
                                                      "node_config": node_config, "run_id": run_id})
        except BaseException:
            connection.close()
            raise
        if reply["refusal"]:
            connection.close()
            return TrainResult(None, {}, reply["refusal"])

        def released() -> None:
            try:
                connection.send({"op": "released"})
            finally:
                connection.close()

        metrics = {**reply["metrics"], "site-worker": 1, "time-worker-transfer": transfer}
        return TrainResult(reply["weights"], metrics, "", released)

    def evaluate(self, config: dict, weights: np.ndarray, node_config: dict, run_id: str = "") -> dict:
        with self._open() as connection:
            reply, _ = self._call(connection, {"op": "evaluate", "config": config, "weights": weights,
                                               "node_config": node_config, "run_id": run_id})
        return reply["metrics"]
