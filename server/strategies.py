"""Flower strategies by name inside the coordinator's wrappers (wrappers.py), and the optimizer state some of
them carry between rounds (for resume)."""

from __future__ import annotations

import numpy as np
from flwr.serverapp import strategy as flower

import torch

from ..common.messages import UNIFORM_WEIGHT
from ..common.wire import Layout
from .settings import FederationSettings
from .wrappers import CentralDP, KeepFrozen, ServerEMA, Validating

# FedOpt-family state that must survive a restart for an exact resume
_STATE_ATTRIBUTES = ("m_t", "v_t")


def make_strategy(settings: FederationSettings, layout: Layout, ema: dict[str, torch.Tensor],
                  trained: np.ndarray | None = None) -> flower.Strategy:
    """ServerEMA([KeepFrozen](Validating([CentralDP](strategy)))): the configured strategy; with central DP, inside
    Flower's fixed-clipping wrapper (server/central_dp.py) and uniform weights; ``trained`` (a fine-tuning run's
    trained entries of the packed vector): the rest kept exactly."""
    if settings.central_dp != "off":
        from . import central_dp
        inner = CentralDP(central_dp.wrap(_base_strategy(settings, weighted_by_key=UNIFORM_WEIGHT), settings))
    else:
        inner = _base_strategy(settings)
    validated = Validating(inner, settings, layout)
    return ServerEMA(validated if trained is None else KeepFrozen(validated, trained), settings.server_ema_decay,
                     layout, ema)


def _base_strategy(settings: FederationSettings, **weighting) -> flower.Strategy:
    common = dict(**weighting, fraction_train=settings.fraction_train,
                  fraction_evaluate=1.0 if settings.evaluate else 0.0, min_train_nodes=settings.min_sites,
                  min_evaluate_nodes=settings.min_sites, min_available_nodes=settings.min_sites)
    name = settings.strategy
    if name == "fedavg":
        return flower.FedAvg(**common)
    if name == "fedprox":
        return flower.FedProx(**common, proximal_mu=settings.proximal_mu)
    if name == "fedadam":
        return flower.FedAdam(**common, eta=settings.server_learning_rate)
    if name == "fedyogi":
        return flower.FedYogi(**common, eta=settings.server_learning_rate)
    if name == "fedmedian":
        return flower.FedMedian(**common)
    if name == "fedtrimmedavg":
        return flower.FedTrimmedAvg(**common, beta=settings.trimmed_beta)
    if name == "krum":
        return flower.Krum(**common, num_malicious_nodes=settings.krum_malicious)
    raise ValueError(f"unknown strategy {name!r}")


def innermost(strategy: flower.Strategy) -> flower.Strategy:
    """The Flower strategy inside every wrapper (ours and Flower's DP wrapper)."""
    while hasattr(strategy, "inner") or hasattr(strategy, "strategy"):
        strategy = getattr(strategy, "inner", None) or strategy.strategy
    return strategy


def strategy_state(strategy: flower.Strategy) -> dict[str, dict[str, np.ndarray]]:
    """Server-optimizer moments (FedAdam, FedYogi) as plain arrays, empty for stateless strategies."""
    base = innermost(strategy)
    return {name: dict(getattr(base, name)) for name in _STATE_ATTRIBUTES
            if isinstance(getattr(base, name, None), dict)}


def restore_strategy_state(strategy: flower.Strategy, state: dict[str, dict[str, np.ndarray]]) -> None:
    base = innermost(strategy)
    for name, arrays in state.items():
        setattr(base, name, {k: np.asarray(v) for k, v in arrays.items()})
