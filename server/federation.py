"""The coordinator's round loop: looping, resume, a checkpoint every round, and model delivery.

Everything done to the replies is a strategy wrapper (wrappers.py: validation, central DP, the server EMA around
any Flower strategy). The loop drives the strategy's own ``configure_*`` / ``aggregate_*`` instead of
``Strategy.start`` because ``start`` cannot begin at round k + 1 nor save the strategy's state between rounds.
Under SecAgg+ (secure_round.py) the sites' replies are summed before the strategy sees them.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ..common import messages
from ..common.app_identity import app_identity
from ..common.checkpoint import load_checkpoint
from ..common.run_spec import RunSpec
from ..common.training.early_stopping import Plateau
from ..common.wire import Layout, WireFormatError, expand_trained, pack, packed_vector, unpack
from . import central_dp
from .delivery import deliver_model, delivery_metadata
from .initial_model import load_initial_model
from .messaging import send_and_collect
from .progress import progress_log, round_summary
from .run_store import RoundState, RunStore
from .tracking import RunTracker, tracking_on
from .secure_round import as_replies, secure_train_round
from .settings import FederationSettings
from .stage_one_file import stage_one_checkpoint
from .strategies import make_strategy, restore_strategy_state, strategy_state
from .validation import metrics_of
from .wrappers import CentralDP, ServerEMA, Validating, find

log = logging.getLogger(__name__)
BUDGET_STOP = "the next round would pass the site-level DP budget (dp_max_epsilon)"  # why, in RUN_DIR/stopped.json


def initial_weights(spec: RunSpec) -> dict[str, torch.Tensor]:
    """The round-0 global model: the same for the same seed, wherever it is created."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.recipe.seed)
        return {k: v.detach().clone() for k, v in spec.network().state_dict().items()}


def train_round(grid: Grid, strategy: Strategy, settings: FederationSettings, server_round: int,
                arrays: ArrayRecord, config: dict, trained: np.ndarray | None = None,
                ) -> tuple[ArrayRecord | None, dict[str, dict], list[dict], dict]:
    """Send, collect, aggregate: (the new global model or None, per-site metrics, rejected or failed replies,
    where the coordinator's time went). Raises PrivacyBudgetExhausted before sending when central DP would pass
    its limit. trained: where a fine-tuning run's replies carry values (RunSpec.trained_mask)."""
    started = time.time()
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(dict(config)), grid))
    if settings.secure_aggregation:
        return (*_secure_round(grid, strategy, messages, settings, server_round), {})
    collected = send_and_collect(grid, messages, settings.timeout)
    if trained is not None:
        _whole_replies(collected.replies, packed_vector(arrays), trained, server_round)
    last = max(collected.arrived_at.values(), default=collected.sent_at)
    aggregated, _ = strategy.aggregate_train(server_round, collected.replies)
    validating = find(strategy, Validating)
    timing = {"send": collected.sent_at - started, "reply-transfer": collected.transfer_seconds(),
              "aggregate": time.time() - last}
    return aggregated, validating.site_metrics, validating.rejected, timing


def _whole_replies(replies: list, global_vector: np.ndarray, trained: np.ndarray, server_round: int) -> None:
    """Put each trained-part reply back into the global vector, before any wrapper or strategy reads it; a reply
    that does not fit is left as it is, and validation rejects it."""
    for reply in replies:
        if reply.has_error() or "arrays" not in reply.content.array_records:
            continue
        try:
            reply.content["arrays"] = expand_trained(reply.content["arrays"], global_vector, trained)
        except WireFormatError as error:
            log.warning("round %d: node %s: %s", server_round, reply.metadata.src_node_id, error)


def _secure_round(grid, strategy, messages, settings, server_round):
    """Under SecAgg+ the server sees only the sum: the strategy (and its central-DP wrapper) takes the mean."""
    weighting = "uniform" if find(strategy, CentralDP) is not None else "examples"
    mean, site_metrics, failed = secure_train_round(grid, messages, settings, server_round, weighting)
    for failure in failed:
        log.warning("round %d: node %s: %s", server_round, failure["node"], failure["reason"])
    if mean is None or len(site_metrics) < settings.min_sites:
        log.error("round %d: %d sites in the secure sum, min_sites = %d; the global model is kept", server_round,
                  len(site_metrics), settings.min_sites)
        strategy.aggregate_train(server_round, [])  # nothing aggregated: the wrappers still close the round
        return None, site_metrics, failed
    aggregated, _ = strategy.aggregate_train(server_round, as_replies(mean, len(site_metrics)))
    return aggregated, site_metrics, failed


def evaluate_round(grid: Grid, strategy: Strategy, settings: FederationSettings, server_round: int,
                   arrays: ArrayRecord, config: dict) -> dict[str, dict]:
    messages = strategy.configure_evaluate(server_round, arrays, ConfigRecord(dict(config)), grid)
    return metrics_of(send_and_collect(grid, messages, settings.timeout).replies)


def _start(store: RunStore, spec: RunSpec, settings: FederationSettings, resume: bool, layout: Layout,
           trained: np.ndarray | None) -> tuple[Strategy, RoundState, dict | None]:
    """The wrapped strategy, the state to continue from (round 0, or the last saved round) and the record of the
    model the run started from (None: from scratch)."""
    weights = initial_weights(spec)
    initial = load_initial_model(settings.initial_model, spec, weights) if settings.initial_model else None
    description = {"spec": spec.to_config(), "settings": asdict(settings)}
    if initial is not None:
        description["initial_model"] = initial.record()
        weights = initial.transfer.weights
        log.info("starting from %s (sha256 %s): %s", initial.path, initial.sha256, initial.transfer.describe())
    store.start(description, resume=resume)
    state = store.latest() if resume else None
    if state is None:
        state = RoundState(0, weights, {k: v.clone() for k, v in weights.items()}, {})
    strategy = make_strategy(settings, layout, state.ema, trained)
    if state.round:
        restore_strategy_state(strategy, state.strategy)
        if (dp := find(strategy, CentralDP)) is not None and state.privacy:
            central_dp.restore_accountant(dp.inner, state.privacy)
        log.info("resuming %s after round %d", store.dir, state.round)
    random.seed(settings.seed * 7_919 + state.round)  # Flower samples nodes with the global `random`
    return strategy, state, description.get("initial_model")


def _record(store: RunStore, spec: RunSpec, settings: FederationSettings, strategy: Strategy, state: RoundState,
            outcome: tuple, evaluation: dict, seconds: float, initial: dict | None) -> tuple[dict, dict]:
    """Checkpoint the round, log one line; returns the registry entry and the round's metrics."""
    aggregated, train_metrics, rejected, timing = outcome
    dp = find(strategy, CentralDP)
    entry = {"sites": sorted(train_metrics), "schema": spec.schema.to_dict(), "aggregated": aggregated is not None,
             "strategy": settings.strategy,
             "eval_loss": float(np.mean([m["eval-loss"] for m in evaluation.values()])) if evaluation else None}
    round_metrics = {"seconds": seconds, "train": train_metrics, "evaluate": evaluation, "rejected": rejected,
                     "timing": timing}
    if dp is not None:
        entry["central_dp"] = round_metrics["central_dp"] = central_dp.privacy_record(dp.inner)
        log.info("round %d: %s epsilon %.4f at delta %g (%s) after %d releases", state.round, central_dp.KIND,
                 entry["central_dp"]["epsilon"], entry["central_dp"]["delta"], entry["central_dp"]["accountant"],
                 entry["central_dp"]["releases"])
    if spec.autoencoder is not None:  # stage 1 of latent diffusion: each round's file is a stage-1 file
        meta, model_state = stage_one_checkpoint(spec, state.weights, evaluation, state.round)
    else:
        meta = {**spec.model_meta(), **({"initial_model": initial} if initial else {})}
        model_state = spec.model_state()
    store.save_round(state, meta, entry, round_metrics, model_state)
    progress_log.info(round_summary(state.round, settings.rounds, round_metrics, entry))
    log.info("round %d done in %.1f s: %d sites aggregated, %d rejected", state.round, seconds, len(train_metrics),
             len(rejected))
    return entry, round_metrics


def _deliver(grid: Grid, participants: set[int], spec: RunSpec, weights, ema, settings: FederationSettings,
             metadata: dict) -> None:
    online = set(grid.get_node_ids())  # a site gone since it trained would only time out
    deliver_model(grid, sorted(participants & online), spec, weights, ema, metadata, settings.timeout)


def _plateau(store: RunStore, settings: FederationSettings) -> Plateau | None:
    """Early stopping's state, rebuilt from the registry's held-out losses (so a resumed run keeps its count)."""
    if not settings.early_stopping_patience:
        return None
    plateau = Plateau(settings.early_stopping_patience, settings.early_stopping_min_delta)
    registry = store.registry()
    for entry in registry:
        if entry.get("eval_loss") is not None and "early_stopping" not in entry:
            plateau.observe(entry["round"], entry["eval_loss"])
    if registry and "early_stopping" in registry[-1]:
        log.info("the run has finished under early stopping (its model is round %d's); nothing more to train",
                 registry[-1]["round"])
    return plateau


def _finish_early(grid: Grid, store: RunStore, plateau: Plateau, participants: set[int], spec: RunSpec,
                  settings: FederationSettings, metadata, budget_reached: bool = False) -> bool:
    """The last round under early stopping (a plateau, the rounds' cap, or the central DP budget): the best
    round's model becomes the run's model (registered last) and is the one delivered. False when no round had a
    finite held-out loss (the last round's model is then the run's)."""
    if plateau.best is None:
        log.error("early stopping: no round had a finite held-out loss; the last round's model is kept")
        return False
    best, last = plateau.best[0], plateau.history[-1][0]
    why = (f"the held-out loss has not improved for {plateau.patience} evaluations" if plateau.stopped
           else f"{central_dp.KIND} would pass dp_max_epsilon = {settings.dp_max_epsilon:g} in the next round"
           if budget_reached else f"the cap of {settings.rounds} rounds is reached")
    record = {**plateau.record(), "at_round": last, **({"privacy_budget_reached": True} if budget_reached else {})}
    line = store.register_best(best, record)
    progress_log.info(f"early stopping after round {last}: {why}; the run's model is round {best}'s "
                      f"(held-out loss {plateau.best[1]:.4f})")
    if settings.deliver_final:
        state, _ = load_checkpoint(line["path"])
        _deliver(grid, participants, spec, state["model"], state["ema"], settings, metadata(best, line))
    return True


def _end_at_budget(grid: Grid, store: RunStore, spec: RunSpec, settings: FederationSettings, state: RoundState,
                   plateau: Plateau | None, participants: set[int], metadata, evaluate) -> None:
    """Central DP allows no further round: the run ends as at its last round. Under early stopping the best round
    so far (the last one evaluated now if it was not) becomes the run's model; otherwise the last round's model
    is delivered as the final one. RUN_DIR/stopped.json records why, so that a resumed run does not redo this."""
    store.mark_stopped(state.round, BUDGET_STOP)
    if plateau is not None and (not plateau.history or plateau.history[-1][0] != state.round):
        if evaluation := evaluate():
            plateau.observe(state.round, float(np.mean([m["eval-loss"] for m in evaluation.values()])))
    kept = plateau is not None and _finish_early(grid, store, plateau, participants, spec, settings, metadata,
                                                 budget_reached=True)
    if not kept and settings.deliver_final and spec.autoencoder is None:
        line = next(e for e in reversed(store.registry()) if e["round"] == state.round)
        _deliver(grid, participants, spec, state.weights, state.ema, settings, metadata(state.round, line))


def _site_privacy(store: RunStore) -> dict[str, dict]:
    """Each site's DP figures after its last round so far (what delivered models' metadata carries), rebuilt
    from the metrics so that a resumed run's deliveries carry them too."""
    return {node: {k: m[k] for k in ("epsilon", "delta", "dp-patient-level") if k in m}
            for entry in store.metrics() for node, m in entry.get("train", {}).items() if "epsilon" in m}


def run_federation(grid: Grid, spec: RunSpec, settings: FederationSettings, run_dir: str | Path,
                   resume: bool = False, run_id: str = "") -> RunStore:
    """Run (or resume) ``settings.rounds`` rounds; every completed round is checkpointed in ``run_dir``; the
    global model is delivered to the participating sites as ``settings`` says."""
    store = RunStore(run_dir)
    layout = spec.weight_layout()  # builds the network once: the layout and the trained part come from it
    trained = spec.trained_mask(layout)
    strategy, state, initial = _start(store, spec, settings, resume, layout, trained)
    tracker = RunTracker(store.dir, settings.tracking_uri, {"spec": spec.to_config(), "settings": asdict(settings)},
                         run_id or Path(run_dir).name) if tracking_on(settings) else None
    base_config = {**spec.message_config(), **app_identity(),
                   messages.INITIAL_MODEL: initial["sha256"] if initial else ""}
    arrays, run_id = pack(state.weights, layout), run_id or Path(run_dir).name
    participants = {int(node) for entry in store.registry() for node in entry.get("sites", [])}
    site_privacy = _site_privacy(store)
    plateau = _plateau(store, settings)
    final_metadata = lambda best, line: delivery_metadata(  # noqa: E731  (the run's own model, final)
        run_id, best, settings.rounds, participants, spec, site_privacy, line, initial, final=True)
    stopped_early = any("early_stopping" in entry for entry in store.registry()[-1:])  # a finished run, resumed
    first = settings.rounds + 1 if stopped_early else state.round + 1
    for server_round in range(first, settings.rounds + 1):
        started = time.perf_counter()
        config = {**base_config, **settings.instruction(server_round).to_config()}
        try:
            outcome = train_round(grid, strategy, settings, server_round, arrays, config, trained)
        except central_dp.PrivacyBudgetExhausted as exhausted:
            log.error("round %d not started: %s (%s, dp_max_epsilon = %g); the run stops here", server_round,
                      exhausted, central_dp.KIND, settings.dp_max_epsilon)
            if state.round and store.stopped() != {"after_round": state.round, "why": BUDGET_STOP}:
                _end_at_budget(grid, store, spec, settings, state, plateau, participants, final_metadata,
                               lambda: evaluate_round(grid, strategy, settings, state.round, arrays, {
                                   **base_config, **settings.instruction(state.round).to_config()}))
            break
        arrays = outcome[0] if outcome[0] is not None else arrays
        evaluation = evaluate_round(grid, strategy, settings, server_round, arrays, config) \
            if settings.evaluates_after(server_round) else {}
        dp = find(strategy, CentralDP)
        state = RoundState(server_round, unpack(arrays, layout), find(strategy, ServerEMA).ema,
                           strategy_state(strategy), central_dp.accountant_state(dp.inner) if dp else "")
        entry, round_metrics = _record(store, spec, settings, strategy, state, outcome, evaluation,
                                       time.perf_counter() - started, initial)
        if tracker is not None:
            tracker.log_round(server_round, round_metrics, entry)
        participants |= {int(node) for node in entry["sites"]}
        site_privacy.update({node: {k: m[k] for k in ("epsilon", "delta", "dp-patient-level") if k in m}
                             for node, m in outcome[1].items() if "epsilon" in m})
        if plateau is not None and entry["eval_loss"] is not None:
            plateau.observe(server_round, entry["eval_loss"])
        final = server_round == settings.rounds or (plateau is not None and plateau.stopped)
        if settings.delivers_after(server_round) and not (final and plateau is not None) and spec.autoencoder is None:
            _deliver(grid, participants, spec, state.weights, state.ema, settings,
                     delivery_metadata(run_id, server_round, settings.rounds, participants, spec, site_privacy,
                                       entry, initial))
        if final and plateau is not None:
            if not _finish_early(grid, store, plateau, participants, spec, settings, final_metadata) \
                    and settings.delivers_after(server_round) and spec.autoencoder is None:
                _deliver(grid, participants, spec, state.weights, state.ema, settings,
                         final_metadata(server_round, entry))
            break
    if tracker is not None:
        registry = store.registry()
        tracker.finish(Path(registry[-1]["path"]) if registry else None,
                       [store.dir / name for name in ("run.json", "metrics.jsonl", "registry.jsonl", "sites.json")])
    return store
