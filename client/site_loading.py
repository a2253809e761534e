"""A deployed site's data for a round: read site.toml (named in the SuperNode's node config), fetch what is new
from the PACS when the site reads one, prepare the data once and cache it beside site.toml
(``.meddiff-site/prepared/<site_id>/``), split off the held-out part."""

from __future__ import annotations

import logging
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path

import torch

from ..common.data.prepared_cache import load_training_set_cached
from ..common.run_spec import RunSpec
from ..common.config import ConfigError
from ..common.site_config import SiteConfig, load_site_config
from .site_data import HOLDOUT_FRACTION, SiteData, holdout_split
from .site_paths import NO_SITE_CONFIG, ledger_path, site_state_dir

log = logging.getLogger(__name__)


def site_data_folder(site_config: str | Path, site: SiteConfig, in_round: bool = False,
                     say: Callable[[str], None] = log.info) -> str:
    """Where the site's images are: ``[data] path``, or the PACS cache brought up to date by a sync.

    In a round (``in_round``) a PACS that cannot be reached does not cost the round: the site trains on the
    studies of its last complete sync and logs why. Anywhere else the PACS error is raised as it is."""
    if site.data.source == "folder":
        if not site.data.path:
            raise ConfigError(f"{site_config}: [data] path is empty; set it to the site's data folder")
        return site.data.path
    from .pacs.remote import PacsError
    from .pacs.sync import pacs_cache, sync

    cache = pacs_cache(site_config, site)
    try:
        report = sync(site_config)
        say(report.line())
        for problem in report.problems:
            say(f"{problem.path}: {problem.reason}")
    except PacsError as error:
        if not in_round or not cache.has_data():
            raise
        log.warning("%s; this round trains on the %d instances of the last complete sync", error,
                    len(cache.committed()))
    return str(cache.instances_dir)


def load_site(site_config: str, resolution: int, depth: int = 0) -> SiteData:
    """The site's data at the run's resolution (and, for a 3D run of anisotropic volumes, its depth)."""
    config = load_site_config(site_config)
    folder = site_data_folder(site_config, config, in_round=True)
    if config.data.resolution and config.data.resolution != resolution:  # never overridden silently
        raise ValueError(f"{site_config}: [data] resolution = {config.data.resolution}, but the coordinator's run "
                         f"trains at resolution = {resolution}; remove [data] resolution from site.toml (the run "
                         "sets it) or ask the coordinator to plan the run at your resolution")
    if config.data.depth and config.data.depth != depth:
        raise ValueError(f"{site_config}: [data] depth = {config.data.depth}, but the coordinator's run trains at "
                         f"depth = {depth or resolution}; remove [data] depth from site.toml (the run sets it)")
    data_config = replace(config.data, depth=depth) if depth else config.data
    state = site_state_dir(site_config)
    training = load_training_set_cached(folder, data_config, resolution, state / "prepared" / config.site_id)
    train, holdout = holdout_split(training.tensors, HOLDOUT_FRACTION)
    tracking = (config.tracking.uri or f"sqlite:///{state / 'mlflow.db'}") if config.tracking.enabled else ""
    return SiteData(config.site_id, train, holdout, config.privacy, ledger_path(state, config.site_id), config.runtime,
                    tracking)


def use_threads(node_config: dict) -> None:
    threads = int(node_config.get("threads", 0) or 0)
    if threads > 0:  # several SuperNodes on one machine must not oversubscribe its cores
        torch.set_num_threads(threads)


def site_from_node_config(node_config: dict, spec: RunSpec) -> SiteData:
    use_threads(node_config)
    path = node_config.get("site-config")
    if not path:
        raise ValueError(NO_SITE_CONFIG)
    return load_site(str(path), spec.data_resolution, spec.data_depth)
