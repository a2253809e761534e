"""The ClientApp a hospital's SuperNode runs: its data comes from the site.toml named in the node config, prepared
once and cached next to it (``.meddiff-site/prepared/<site_id>/``), because every message starts a new process.

    flower-supernode ... --node-config 'site-config="/etc/meddiff/site.toml"'
"""

from __future__ import annotations


import torch
from flwr.app import Context

from ..common.site_config import load_site_config
from ..common.data.prepared_cache import load_training_set_cached
from ..common.run_spec import RunSpec
from .client_app import make_client_app
from .site_data import HOLDOUT_FRACTION, SiteData, holdout_split
from .model_store import ModelStore
from .site_paths import ledger_path, models_dir, site_state_dir


def _load(site_config: str, resolution: int) -> SiteData:
    config = load_site_config(site_config)
    if not config.data.path:
        raise ValueError(f"{site_config}: [data] path is empty; set it to the site's data folder")
    if config.data.resolution and config.data.resolution != resolution:  # never overridden silently
        raise ValueError(f"{site_config}: [data] resolution = {config.data.resolution}, but the coordinator's run "
                         f"trains at resolution = {resolution}; remove [data] resolution from site.toml (the run "
                         "sets it) or ask the coordinator to plan the run at your resolution")
    state = site_state_dir(site_config)
    training = load_training_set_cached(config.data.path, config.data, resolution, state / "prepared" / config.site_id)
    train, holdout = holdout_split(training.tensors, HOLDOUT_FRACTION)
    return SiteData(config.site_id, train, holdout, config.privacy, ledger_path(state, config.site_id), config.runtime)


def site_from_node_config(context: Context, spec: RunSpec) -> SiteData:
    threads = int(context.node_config.get("threads", 0) or 0)
    if threads > 0:  # several SuperNodes on one machine must not oversubscribe its cores
        torch.set_num_threads(threads)
    path = context.node_config.get("site-config")
    if not path:
        raise ValueError("this SuperNode has no site config: start it with "
                         "--node-config 'site-config=\"/path/to/site.toml\"' (or use `meddiff site start`)")
    return _load(str(path), spec.resolution)


def store_from_node_config(context: Context) -> ModelStore | None:
    path = context.node_config.get("site-config")
    return ModelStore(models_dir(site_state_dir(str(path)))) if path else None


app = make_client_app(site_from_node_config, store_from_node_config)
