"""The ClientApp a hospital's SuperNode runs. Its rounds run in the site worker when `meddiff site start` runs
one (client/site_worker.py: torch, MONAI and the prepared data stay in memory between rounds); otherwise in this
process, which then imports them and reads the prepared data from its cache beside site.toml
(``.meddiff-site/prepared/<site_id>/``), since Flower starts a new process for every message.

    flower-supernode ... --node-config 'site-config="/etc/meddiff/site.toml"'
"""

from __future__ import annotations

import logging

from flwr.app import Context

from .client_app import make_client_app
from .round_result import RoundRunner
from .site_paths import NO_SITE_CONFIG, models_dir, site_state_dir
from .worker_channel import WorkerRunner


def _log_to_the_supernode() -> None:
    """Our INFO lines (a round's steps and loss, a worker not used and why) reach the SuperNode's log, which the
    site daemon collects; Flower's own DEBUG lines do not."""
    ours = logging.getLogger("meddiff")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s : %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False


def site_runner(context: Context) -> RoundRunner:
    _log_to_the_supernode()
    path = context.node_config.get("site-config")
    if not path:
        raise ValueError(NO_SITE_CONFIG)
    worker = WorkerRunner.connect(site_state_dir(str(path)))
    if worker is not None:
        return worker
    from .local_runner import LocalRunner  # torch, MONAI: only when no worker runs the round
    from .site_loading import site_from_node_config

    return LocalRunner(site_from_node_config)


def store_from_node_config(context: Context):
    from .model_store import ModelStore  # torch: once per delivery

    path = context.node_config.get("site-config")
    return ModelStore(models_dir(site_state_dir(str(path)))) if path else None


app = make_client_app(site_runner, store_from_node_config)
