"""A round run in the calling process: a simulation's virtual sites, and a deployed site without a site worker.

The ClientApp hands it the coordinator's config and the packed global weights; it builds the run spec, asks its
site provider for the site's data, trains or evaluates (client/round.py), and packs the result. It times each
part, so the deployment benchmark can say where a round's fixed cost goes.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from ..common.messages import SECURE_WEIGHT, SERVER_ROUND, TrainInstruction
from ..common.run_spec import RunSpec
from ..common.wire import state_dict_of, vector_of
from ..privacy.ledger import BudgetExceeded, UnitMismatch
from .autoencoder_round import evaluate_autoencoder, train_autoencoder_round
from .latent_site import latent_site
from .round import evaluate_round, train_round
from .round_result import TrainResult
from .site_data import SiteData
from .site_tracking import log_site_round

# (the SuperNode's node config, the run spec) -> the site's data, at the run's data_resolution (pixels)
SiteProvider = Callable[[dict, RunSpec], SiteData]


def sends_trained_part(spec: RunSpec, config: dict) -> bool:
    """Whether this round's reply carries only the trained part of the weights: when the run fine-tunes a part,
    unless SecAgg+ or the site-side clipping of central DP is on (both work on the whole vector: Flower's mods)."""
    return spec.recipe.trainable != "all" and SECURE_WEIGHT not in config and KEY_CLIPPING_NORM not in config


class LocalRunner:
    def __init__(self, site_provider: SiteProvider) -> None:
        self.site_provider = site_provider

    def train(self, config: dict, weights: np.ndarray, node_config: dict, run_id: str) -> TrainResult:
        started = time.perf_counter()
        spec, instruction = RunSpec.from_config(config), TrainInstruction.from_config(config)
        site = latent_site(self.site_provider(node_config, spec), spec, node_config.get("device") or None)
        loaded = time.perf_counter()
        layout = spec.weight_layout()
        try:
            if spec.autoencoder is not None:  # stage 1 of latent diffusion
                outcome = train_autoencoder_round(spec, state_dict_of(weights, layout), site, instruction, run_id,
                                                  node_config.get("device") or None)
            else:
                outcome = train_round(spec, state_dict_of(weights, layout), site, instruction, run_id, site.runtime,
                                      node_config.get("device") or None)
        except (BudgetExceeded, UnitMismatch) as refusal:  # nothing trained, nothing sent
            return TrainResult(None, {}, str(refusal))
        trained = time.perf_counter()
        vector = vector_of(outcome.weights, layout)
        if sends_trained_part(spec, config):  # the frozen rest is the global model's own values
            vector = vector[spec.trained_mask(layout)]
        packed = time.perf_counter()
        timing = {"time-data": loaded - started, "time-setup": max(0.0, trained - loaded - outcome.metrics["seconds"]),
                  "time-pack": packed - trained}
        if site.tracking_uri:
            log_site_round(site.tracking_uri, site.site_id, run_id, instruction.server_round, "train", outcome.metrics)
        return TrainResult(vector, {**outcome.metrics, **timing}, "", outcome.released)

    def evaluate(self, config: dict, weights: np.ndarray, node_config: dict, run_id: str = "") -> dict:
        spec = RunSpec.from_config(config)
        site = latent_site(self.site_provider(node_config, spec), spec, node_config.get("device") or None)
        evaluate = evaluate_autoencoder if spec.autoencoder is not None else evaluate_round
        metrics = evaluate(spec, state_dict_of(weights, spec.weight_layout()), site, seed=spec.recipe.seed,
                           device=node_config.get("device") or None)
        if site.tracking_uri and run_id:
            log_site_round(site.tracking_uri, site.site_id, run_id, int(config.get(SERVER_ROUND, 0)), "evaluate",
                           metrics)
        return metrics
