"""A federated run as an experiment tracker shows it: MLflow (by default a local store in the run directory,
``RUN_DIR/mlflow.db`` with artifacts in ``RUN_DIR/mlartifacts``; or ``[federation] tracking_uri``) and TensorBoard
event files beside it (``RUN_DIR/tensorboard``).

What is logged is what the coordinator already holds, nothing more: the run's parameters (plan, strategy,
privacy settings), per round the numbers of metrics.jsonl (per site: training and held-out losses, images/s,
update norm, epsilon with its unit and accountant; rejections; central DP), and at the end the run's files and
the final model, registered with its SHA-256. A site's metrics reach it only through the site's allow-list
(client/site_guard.py). The tracker never stops a run: if it fails, the run goes on and the log says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT = "meddiff"
REGISTERED_MODEL = "meddiff-global-model"
TRACKING_DB, ARTIFACTS, TENSORBOARD = "mlflow.db", "mlartifacts", "tensorboard"
RUN_TAG = "meddiff.run_dir"


def tracking_on(settings) -> bool:
    """``[federation] tracking = "mlflow"``, unless this machine says MEDDIFF_TRACKING=off (the test suite does:
    only the tests of tracking pay for MLflow's start-up)."""
    return settings.tracking == "mlflow" and os.environ.get("MEDDIFF_TRACKING", "on").lower() != "off"


def quiet_mlflow() -> None:
    """MLflow logs its database set-up at INFO on the console; a run's console shows the run, not that."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def local_uri(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / TRACKING_DB).resolve()}"


def flat_params(description: dict, prefix: str = "") -> dict[str, str]:
    """Nested run settings as MLflow parameters: ``settings.strategy`` = ``fedavg`` (values cut to 500 chars)."""
    out: dict[str, str] = {}
    for key, value in description.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value, default=str)[:500] if not isinstance(value, str) else value[:500]
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def round_metrics(round_metrics: dict, entry: dict, site_names: dict[str, str]) -> dict[str, float]:
    """One round of metrics.jsonl as MLflow metric names: ``site-a/train-loss``, ``round/rejected`` ..."""
    out = {"round/seconds": float(round_metrics.get("seconds", 0.0)),
           "round/sites-aggregated": float(len(round_metrics.get("train", {}))),
           "round/rejected": float(len(round_metrics.get("rejected", [])))}
    if _number(entry.get("eval_loss")) is not None:
        out["global/eval-loss"] = float(entry["eval_loss"])
    for kind in ("train", "evaluate"):
        for node, metrics in round_metrics.get(kind, {}).items():
            site = site_names.get(str(node), f"node-{node}")
            for key, value in metrics.items():
                number = _number(value)
                if number is not None and key != "partition-id" and not key.startswith("time-"):
                    out[f"{site}/{key}"] = number
    central = round_metrics.get("central_dp") or {}
    if _number(central.get("epsilon")) is not None:
        out["central-dp/epsilon"] = float(central["epsilon"])
    return out


def site_name(node: str, metrics: dict) -> str:
    """A simulation's virtual hospitals by partition (site-0, site-1 ...); a deployment's sites by node id."""
    partition = metrics.get("partition-id")
    return f"site-{int(partition)}" if _number(partition) is not None else f"node-{node}"


def privacy_tags(round_metrics: dict, site_names: dict[str, str]) -> dict[str, str]:
    """Which DP each epsilon is: sample-level DP-SGD at a site (its unit and accountant), site-level at the server."""
    tags = {}
    for node, metrics in round_metrics.get("train", {}).items():
        if "epsilon" in metrics:
            unit = "patient" if metrics.get("dp-patient-level") else "example"
            accountant = "PRV" if metrics.get("dp-accountant-prv") else "RDP"
            tags[f"privacy.{site_names.get(str(node), node)}"] = (
                f"sample-level DP-SGD at the site: epsilon per {unit}, delta {metrics.get('delta', 0):.3g}, "
                f"Opacus {accountant} accountant")
    central = round_metrics.get("central_dp") or {}
    if central:
        tags["privacy.central"] = (f"site-level DP at the server: delta {central.get('delta')}, "
                                   f"{central.get('accountant', 'RDP')} accountant")
    return tags


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunTracker:
    """One federated run in MLflow and TensorBoard, written by a thread of its own so that the rounds never wait
    for the tracker (importing MLflow and creating its database take seconds). Each step is guarded: a tracker
    problem is logged once and tracking stops; the federation never fails because of it."""

    FINISH_TIMEOUT = 120.0  # seconds the end of a run waits for the tracker to write what is queued

    def __init__(self, run_dir: Path, uri: str, description: dict, run_name: str) -> None:
        self.run_dir, self.uri = Path(run_dir).resolve(), uri or local_uri(run_dir)
        self.site_names: dict[str, str] = {}
        self.client = self.run_id = self.board = None
        self.failed = False
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="meddiff-tracking", daemon=True)
        self.thread.start()
        self.queue.put(("start", self._start, (description, run_name)))

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            what, action, args = item
            if self.failed:
                continue
            try:
                action(*args)
            except Exception as error:  # a tracker that is down or full must not end a hospital federation
                log.warning("experiment tracking %s failed (%s: %s); the run goes on without it", what,
                            type(error).__name__, error)
                self.failed = True

    def _start(self, description: dict, run_name: str) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        quiet_mlflow()  # after the import, which sets MLflow's own levels

        client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        local = self.uri == local_uri(self.run_dir)  # a tracking server keeps artifacts where it is set up to
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(
            EXPERIMENT, artifact_location=(self.run_dir / ARTIFACTS).as_uri() if local else None)
        found = client.search_runs([experiment_id], f"tags.`{RUN_TAG}` = '{self.run_dir}'", max_results=1)
        if found:  # a resumed run continues its MLflow run
            self.run_id = found[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = client.create_run(experiment_id, run_name=run_name,
                                            tags={RUN_TAG: str(self.run_dir)}).info.run_id
            params = [Param(k, v) for k, v in flat_params(description).items()]
            for start in range(0, len(params), 100):
                client.log_batch(self.run_id, params=params[start:start + 100])
            client.log_batch(self.run_id, tags=[RunTag("mlflow.note.content", "meddiff federated run")])
        self.client = client
        self.board = _tensorboard(self.run_dir / TENSORBOARD)

    def log_round(self, server_round: int, metrics: dict, entry: dict) -> None:
        self.queue.put((f"of round {server_round}", self._log_round, (server_round, json.loads(json.dumps(
            metrics, default=str)), dict(entry))))

    def _log_round(self, server_round: int, metrics: dict, entry: dict) -> None:
        from mlflow.entities import Metric, RunTag

        for kind in ("train", "evaluate"):
            for node, values in metrics.get(kind, {}).items():
                self.site_names.setdefault(str(node), site_name(str(node), values))
        stamp = int(time.time() * 1000)
        values = round_metrics(metrics, entry, self.site_names)
        batch = [Metric(key, value, stamp, server_round) for key, value in sorted(values.items())]
        tags = [RunTag(k, v) for k, v in privacy_tags(metrics, self.site_names).items()]
        for start in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[start:start + 500], tags=tags if start == 0 else [])
        if self.board is not None:
            for key, value in values.items():
                self.board.add_scalar(key, value, server_round)
            self.board.flush()

    def finish(self, final_model: Path | None, artifacts: list[Path]) -> None:
        """Queue the run's files and final model, then wait (bounded) until everything queued is written."""
        self.queue.put(("at the end", self._finish, (final_model, artifacts)))
        self.queue.put(None)
        self.thread.join(self.FINISH_TIMEOUT)
        if self.thread.is_alive():
            log.warning("experiment tracking did not finish within %.0f s; what it had not written is missing "
                        "from the tracker (metrics.jsonl has it all)", self.FINISH_TIMEOUT)

    def _finish(self, final_model: Path | None, artifacts: list[Path]) -> None:
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path), "run" if path.suffix != ".png" else "figures")
        if final_model is not None and final_model.exists():
            sha256 = sha256_of(final_model)
            self.client.log_artifact(self.run_id, str(final_model), "model")
            self.client.set_tag(self.run_id, "model.sha256", sha256)
            self._register(final_model, sha256)
        if self.board is not None:
            self.board.close()
        self.client.set_terminated(self.run_id, "FINISHED")

    def _register(self, final_model: Path, sha256: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(REGISTERED_MODEL, description="meddiff global models")
        except MlflowException:
            pass  # already registered by an earlier run
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/model/{final_model.name}"
        self.client.create_model_version(REGISTERED_MODEL, source, run_id=self.run_id,
                                         tags={"sha256": sha256, "file": final_model.name,
                                               "run_dir": str(self.run_dir)})


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is not installed: MLflow alone
        return None
    return SummaryWriter(str(folder))


def log_files(run_dir: Path, uri: str, files: list[Path], artifact_path: str) -> int:
    """Attach files made after the run (the simulation report and its figures, sample grids) to the run's MLflow
    run; returns how many were attached (0, with a warning, when the tracker cannot be used)."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri or local_uri(run_dir))
        experiment = client.get_experiment_by_name(EXPERIMENT)
        found = client.search_runs([experiment.experiment_id], f"tags.`{RUN_TAG}` = '{Path(run_dir).resolve()}'",
                                   max_results=1) if experiment else []
        if not found:
            return 0
        attached = 0
        for path in files:
            if path.is_file():
                client.log_artifact(found[0].info.run_id, str(path), artifact_path)
                attached += 1
        return attached
    except Exception as error:
        log.warning("experiment tracking: could not attach %d file(s) (%s: %s)", len(files), type(error).__name__,
                    error)
        return 0
