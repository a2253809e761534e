"""One federated round with sample-level DP at the site: derive the noise, reserve the cost in the ledger,
train with DP-SGD, and mark the release. Plain code, called by the ClientApp, testable without Flower."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Callable

import torch

from ..client.local_round import round_seed
from ..client.site_data import SiteData, align_to_schema
from ..common.run_spec import RunSpec
from .accounting import noise_for_run
from .dp_sgd import PrivateTrainer, poisson_sample_rate
from .ledger import PrivacyLedger

log = logging.getLogger(__name__)


def private_train_round(spec: RunSpec, weights: dict[str, torch.Tensor], site: SiteData, steps: int,
                        server_round: int, planned_rounds: int, run: str,
                        device: str | None = None) -> tuple[dict[str, torch.Tensor], dict, Callable[[], None]]:
    """DP-SGD for ``steps`` steps from the global ``weights``; returns the weights, the metrics and a function to
    call when the weights are handed over (it marks the ledger entry ``released``). The noise multiplier keeps the whole run
    (``planned_rounds`` x ``steps``) within the site's target epsilon; the ledger refuses (BudgetExceeded) a round
    that would take the site's total past its budget, before anything is trained."""
    privacy = site.privacy
    if site.ledger_path is None:
        raise ValueError(f"site {site.site_id}: privacy is enabled but no ledger path is set")
    data = align_to_schema(site.train, spec.schema)
    sample_rate = poisson_sample_rate(len(data), spec.train.batch_size)
    delta = privacy.delta_for(len(data))
    noise = noise_for_run(privacy.target_epsilon, delta, sample_rate, planned_rounds * steps, privacy.accountant)
    ledger = PrivacyLedger(site.ledger_path, privacy.accountant)
    reservation = ledger.reserve(run, server_round, steps, sample_rate, noise, delta, privacy.budget)
    try:
        config = replace(spec.train, seed=round_seed(spec.train.seed, server_round, site.site_id), steps=steps)
        trainer = PrivateTrainer(spec.schema, spec.model, config, privacy, data, noise,
                                 list(reservation.history_before), device)
        trainer.load_weights(weights)
        result = trainer.train(steps)
    except BaseException as error:
        ledger.cancel(reservation, f"training failed before release: {error!r}")
        raise
    if not math.isclose(result.epsilon, reservation.epsilon_total, rel_tol=1e-9):
        log.warning("accountant epsilon %.6g differs from the reserved %.6g (the reserved, larger one is kept)",
                    result.epsilon, reservation.epsilon_total)
    log.info("site %s round %d: DP-SGD %d steps, noise %.3f, q %.4f; sample-level epsilon %.3f at delta %.2g (%s)",
             site.site_id, server_round, result.steps, noise, sample_rate, reservation.epsilon_total, delta,
             privacy.accountant.upper())
    metrics = {"num-examples": len(data), "train-loss": result.loss, "steps": result.steps,
               "seconds": result.seconds, "images-per-second": result.examples / max(result.seconds, 1e-9),
               "skipped-nonfinite": 0, "epsilon": max(result.epsilon, reservation.epsilon_total), "delta": delta,
               "noise-multiplier": noise}
    return trainer.weights(), metrics, lambda: ledger.released(reservation)
