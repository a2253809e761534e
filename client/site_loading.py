"""A deployed site's data for a round: read site.toml (named in the SuperNode's node config), prepare the data
once and cache it beside site.toml (``.meddiff-site/prepared/<site_id>/``), split off the held-out part."""

from __future__ import annotations

import torch

from ..common.data.prepared_cache import load_training_set_cached
from ..common.run_spec import RunSpec
from ..common.site_config import load_site_config
from .site_data import HOLDOUT_FRACTION, SiteData, holdout_split
from .site_paths import NO_SITE_CONFIG, ledger_path, site_state_dir



def load_site(site_config: str, resolution: int) -> SiteData:
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


def use_threads(node_config: dict) -> None:
    threads = int(node_config.get("threads", 0) or 0)
    if threads > 0:  # several SuperNodes on one machine must not oversubscribe its cores
        torch.set_num_threads(threads)


def site_from_node_config(node_config: dict, spec: RunSpec) -> SiteData:
    use_threads(node_config)
    path = node_config.get("site-config")
    if not path:
        raise ValueError(NO_SITE_CONFIG)
    return load_site(str(path), spec.resolution)
