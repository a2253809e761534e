"""The coordinator's round loop: Flower strategies aggregate; we validate replies, keep an EMA, checkpoint every
round and resume from the last complete one.

Written as a loop over the strategy's own ``configure_*`` / ``aggregate_*`` (instead of ``Strategy.start``)
because ``start`` cannot begin at round k + 1, cannot filter replies before aggregation, and cannot save the
strategy's state between rounds.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from ..common.diffusion.model import ConditionalDenoiser
from ..common.training.ema import ema_decay
from ..common.run_spec import RunSpec
from ..common.wire import Layout, WireFormatError, pack, unpack, unpack_numpy
from ..common.app_identity import app_identity
from . import central_dp
from .delivery import deliver_model, delivery_metadata
from .progress import progress_log, round_summary
from .run_store import RoundState, RunStore
from .secure_round import as_replies, secure_train_round
from .settings import FederationSettings
from .strategies import make_strategy, restore_strategy_state, strategy_state
from .validation import validate_updates

log = logging.getLogger(__name__)


def initial_weights(spec: RunSpec) -> dict[str, torch.Tensor]:
    """The round-0 global model: the same for the same seed, wherever it is created."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.recipe.seed)
        return {k: v.detach().clone() for k, v in ConditionalDenoiser(spec.schema, spec.model).state_dict().items()}


def _filter_replies(replies: list[Message], global_arrays: dict[str, np.ndarray], layout: Layout,
                    settings: FederationSettings, server_round: int) -> tuple[list[Message], list[dict]]:
    """Replies that may be aggregated, and one record per rejected or failed reply."""
    rejected, candidates, unpacked = [], {}, {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            rejected.append({"node": node, "reason": f"site error: {reply.error.reason}"})
            continue
        if "arrays" not in reply.content.array_records:
            rejected.append({"node": node, "reason": "reply carries no 'arrays' record"})
            continue
        try:
            unpacked[node] = unpack_numpy(reply.content["arrays"], layout)
        except WireFormatError as error:
            rejected.append({"node": node, "reason": str(error)})
            continue
        candidates[node] = reply
    if settings.central_dp == "off":
        limits = {"max_norm_ratio": settings.max_norm_ratio}
    else:  # with central DP, who is aggregated must not depend on the other sites' updates: clipping bounds them
        limits = {"max_norm_ratio": float("inf"),
                  "max_update_norm": settings.dp_clipping_norm if settings.central_dp == "client-clipping"
                  else float("inf")}
    verdicts = validate_updates(unpacked, global_arrays, **limits)
    accepted = []
    for verdict in verdicts:
        if verdict.accepted:
            accepted.append(candidates[verdict.node_id])
        else:
            rejected.append({"node": verdict.node_id, "reason": verdict.reason})
    for r in rejected:
        log.warning("round %d: reply from node %s rejected: %s", server_round, r["node"], r["reason"])
    return accepted, rejected


def _site_metrics(replies: list[Message]) -> dict[str, dict]:
    out = {}
    for reply in replies:
        if not reply.has_error() and "metrics" in reply.content.metric_records:
            out[str(reply.metadata.src_node_id)] = dict(reply.content["metrics"])
    return out


def _plain_step(grid, strategy, dp, messages, arrays, layout, settings, server_round):
    """Send, validate each reply, aggregate the accepted ones: (aggregate or None, site metrics, rejections)."""
    replies = list(grid.send_and_receive(messages, timeout=settings.timeout))
    accepted, rejected = _filter_replies(replies, unpack_numpy(arrays, layout), layout, settings, server_round)
    if len(accepted) < settings.min_sites:
        log.error("round %d: %d accepted replies, fewer than min_sites = %d; the global model is kept",
                  server_round, len(accepted), settings.min_sites)
        return None, _site_metrics(accepted), rejected
    site_metrics = _site_metrics(accepted)
    _common_metric_keys(accepted)
    if dp is not None:
        central_dp.prepare_aggregation(dp, accepted)
    return strategy.aggregate_train(server_round, accepted)[0], site_metrics, rejected


def _common_metric_keys(replies: list[Message]) -> None:
    """Keep in each reply only the metric keys every reply has: Flower's strategies refuse to aggregate records of
    different keys, and sites differ (a site with DP also reports epsilon). Per-site values are kept apart."""
    records = [reply.content["metrics"] for reply in replies if "metrics" in reply.content.metric_records]
    if len(records) != len(replies):
        return
    common = set.intersection(*(set(record) for record in records)) if records else set()
    for reply, record in zip(replies, records):
        if set(record) != common:
            reply.content["metrics"] = MetricRecord({k: record[k] for k in record if k in common})


def _secure_step(grid, strategy, dp, messages, settings, server_round):
    """The same under SecAgg+: the server sees only the mean, which the strategy (and DP wrapper) then takes."""
    mean, site_metrics, failed = secure_train_round(grid, messages, settings, server_round,
                                                    "uniform" if dp is not None else "examples")
    for failure in failed:
        log.warning("round %d: node %s: %s", server_round, failure["node"], failure["reason"])
    if mean is None or len(site_metrics) < settings.min_sites:
        log.error("round %d: %d sites in the secure sum, min_sites = %d; the global model is kept", server_round,
                  len(site_metrics), settings.min_sites)
        return None, site_metrics, failed
    replies = as_replies(mean, len(site_metrics))
    if dp is not None:
        central_dp.prepare_aggregation(dp, replies)
    return strategy.aggregate_train(server_round, replies)[0], site_metrics, failed


def run_federation(grid: Grid, spec: RunSpec, settings: FederationSettings, run_dir: str | Path,
                   resume: bool = False, run_id: str = "") -> RunStore:
    """Run (or resume) ``settings.rounds`` rounds; every completed round is checkpointed in ``run_dir``; the
    global model is delivered to the participating sites as ``settings`` says."""
    store = RunStore(run_dir)
    store.start({"spec": spec.to_config(), "settings": asdict(settings)}, resume=resume)
    strategy = make_strategy(settings)
    dp = strategy if settings.central_dp != "off" else None
    state = store.latest() if resume else None
    if state is None:
        weights = initial_weights(spec)
        state = RoundState(0, weights, {k: v.clone() for k, v in weights.items()}, {})
    else:
        restore_strategy_state(strategy, state.strategy)
        if dp is not None and state.privacy:
            central_dp.restore_accountant(dp, state.privacy)
        log.info("resuming %s after round %d", run_dir, state.round)
    random.seed(settings.seed * 7_919 + state.round)  # Flower samples nodes with the global `random`
    layout = spec.weight_layout()
    arrays = pack(state.weights, layout)
    base_config = {**spec.to_config(), **app_identity()}
    run_id = run_id or Path(run_dir).name
    participants = {int(node) for entry in store.registry() for node in entry.get("sites", [])}
    site_privacy: dict[str, dict] = {}
    for server_round in range(state.round + 1, settings.rounds + 1):
        started = time.perf_counter()
        config = {**base_config, **settings.instruction(server_round).to_config()}
        if dp is None:
            messages = strategy.configure_train(server_round, arrays, ConfigRecord(dict(config)), grid)
        else:
            try:
                messages = central_dp.configure_train(dp, server_round, arrays, ConfigRecord(dict(config)), grid)
            except central_dp.PrivacyBudgetExhausted as exhausted:
                log.error("round %d not started: %s (%s, dp_max_epsilon = %g); the run stops here", server_round,
                          exhausted, central_dp.KIND, settings.dp_max_epsilon)
                break
        if settings.secure_aggregation:
            aggregated, train_metrics, rejected = _secure_step(grid, strategy, dp, list(messages), settings,
                                                               server_round)
        else:
            aggregated, train_metrics, rejected = _plain_step(grid, strategy, dp, messages, arrays, layout, settings,
                                                              server_round)
        if aggregated is not None:  # server optimizers (FedAdam, ...) compute in float64: back to float32
            arrays = ArrayRecord({key: Array(value.numpy().astype(np.float32)) for key, value in aggregated.items()})
        weights = unpack(arrays, layout)
        decay = ema_decay(server_round, settings.server_ema_decay)  # the trainer's warm-up, over rounds
        ema = {k: decay * state.ema[k] + (1 - decay) * weights[k] if weights[k].is_floating_point() else weights[k]
               for k in weights}
        evaluation = {}
        if settings.evaluates_after(server_round):
            eval_messages = strategy.configure_evaluate(server_round, arrays, ConfigRecord(dict(config)), grid)
            evaluation = _site_metrics(list(grid.send_and_receive(eval_messages, timeout=settings.timeout)))
        seconds = time.perf_counter() - started
        state = RoundState(server_round, weights, ema, strategy_state(strategy),
                           central_dp.accountant_state(dp) if dp is not None else "")
        sites = sorted(train_metrics)
        entry = {"sites": sites, "schema": spec.schema.to_dict(), "aggregated": aggregated is not None,
                 "strategy": settings.strategy,
                 "eval_loss": float(np.mean([m["eval-loss"] for m in evaluation.values()])) if evaluation else None}
        round_metrics = {"seconds": seconds, "train": train_metrics, "evaluate": evaluation, "rejected": rejected}
        if dp is not None:
            entry["central_dp"] = round_metrics["central_dp"] = central_dp.privacy_record(dp)
            log.info("round %d: %s epsilon %.4f at delta %g (%s) after %d releases", server_round, central_dp.KIND,
                     entry["central_dp"]["epsilon"], entry["central_dp"]["delta"], entry["central_dp"]["accountant"],
                     entry["central_dp"]["releases"])
        store.save_round(state, spec.model_meta(), entry, round_metrics)
        progress_log.info(round_summary(server_round, settings.rounds, round_metrics, entry))
        log.info("round %d done in %.1f s: %d sites aggregated, %d rejected", server_round, seconds,
                 len(train_metrics), len(rejected))
        participants |= {int(node) for node in sites}
        site_privacy.update({node: {k: m[k] for k in ("epsilon", "delta") if k in m}
                             for node, m in train_metrics.items() if "epsilon" in m})
        if settings.delivers_after(server_round):
            online = set(grid.get_node_ids())  # a site gone since it trained would only time out
            deliver_model(grid, sorted(participants & online), spec, state.weights, state.ema,
                          delivery_metadata(run_id, server_round, settings.rounds, participants, spec, site_privacy,
                                            entry), settings.timeout)
    return store
