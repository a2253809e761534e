"""The ClientApp a hospital's SuperNode runs: its data comes from the site.toml named in the node config.

    flower-supernode ... --node-config 'site-config="/etc/meddiff/site.toml"'
"""

from __future__ import annotations

import torch
from flwr.app import Context

from ..common.config import load_site_config
from ..common.data.training_set import load_training_set
from ..common.run_spec import RunSpec
from .client_app import make_client_app
from .site_data import SiteData, holdout_split

HOLDOUT = 0.1


def _load(site_config: str, resolution: int) -> SiteData:
    config = load_site_config(site_config)
    if not config.data.path:
        raise ValueError(f"{site_config}: [data] path is empty; set it to the site's data folder")
    training = load_training_set(config.data.path, config.data, resolution)
    train, holdout = holdout_split(training.tensors, HOLDOUT)
    return SiteData(config.site_id, train, holdout)


def site_from_node_config(context: Context, spec: RunSpec) -> SiteData:
    threads = int(context.node_config.get("threads", 0) or 0)
    if threads > 0:  # several SuperNodes on one machine must not oversubscribe its cores
        torch.set_num_threads(threads)
    path = context.node_config.get("site-config")
    if not path:
        raise ValueError("this SuperNode has no site config: start it with "
                         "--node-config 'site-config=\"/path/to/site.toml\"' (or use `meddiff site start`)")
    return _load(str(path), spec.resolution)


app = make_client_app(site_from_node_config)
