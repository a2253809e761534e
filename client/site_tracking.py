"""The site's own experiment tracker (site.toml ``[tracking]``): each round's training and held-out numbers, as
the site computed them, in an MLflow store the site chooses (by default beside site.toml). It is the site's: the
coordinator's tracker gets only what the site's allow-list sends. A tracker problem is logged and the round goes
on."""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger(__name__)

RUN_TAG = "meddiff.federation_run"


def log_site_round(uri: str, site_id: str, run_id: str, server_round: int, kind: str, metrics: dict) -> None:
    """``train/train-loss``, ``train/epsilon``, ``evaluate/eval-loss`` ... at step = the round, in the MLflow run
    of this federation run (experiment ``meddiff-site-<site_id>``)."""
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # their database set-up is not the site's console's business (set after
            logging.getLogger(name).setLevel(logging.WARNING)  # the import, which sets MLflow's own levels)

        client = MlflowClient(tracking_uri=uri)
        name = f"meddiff-site-{site_id}"
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        found = client.search_runs([experiment_id], f"tags.`{RUN_TAG}` = '{run_id}'", max_results=1)
        mlflow_run = found[0].info.run_id if found else client.create_run(
            experiment_id, run_name=f"federation run {run_id}", tags={RUN_TAG: str(run_id)}).info.run_id
        stamp = int(time.time() * 1000)
        batch = [Metric(f"{kind}/{key}", float(value), stamp, server_round) for key, value in sorted(metrics.items())
                 if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]
        client.log_batch(mlflow_run, metrics=batch)
    except Exception as error:  # the site's tracker must never cost the site its round
        log.warning("site tracking of round %d failed (%s: %s); the round goes on", server_round,
                    type(error).__name__, error)
