"""One training round under SecAgg+: the coordinator learns the (weighted) mean of the sites' weights, not any
single site's weights.

Flower's ``SecAggPlusWorkflow`` exists only in the legacy workflow API (a LegacyContext around a legacy
Strategy). We run it as the training step of our own round loop: the sites and their configs are the ones our
strategy (or its central-DP wrapper) configured; the legacy strategy below only hands them to the workflow and
keeps what comes back. The securely aggregated mean then goes through our strategy's ``aggregate_train`` as
m identical replies (m = sites in the sum), so FedAvg returns it unchanged and the central-DP wrapper adds its
noise for m sites and composes its accountant exactly as in a round without SecAgg+ (distributed DP: the sites
clip, SecAgg+ hides each update, the server adds the noise).

Limits (docs/privacy.md): the server cannot validate or reject one site's update, only the aggregate; SecAgg+
protects against an honest-but-curious coordinator, not a malicious one that lies about who dropped out; with 2
sites the sum and one's own update reveal the other's; the weights are quantised (2^22 levels over
+-secagg_clipping_range, stochastic rounding).
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitIns, Parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.server_config import ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from ..common.messages import SECURE_CLIPPING_RANGE, SECURE_MAX_WEIGHT, SECURE_WEIGHT, UNIFORM_WEIGHT
from ..common.wire import PACKED_KEY
from .settings import FederationSettings
from .wrappers import SECURE_MEAN

log = logging.getLogger(__name__)


MODULUS = 2**32  # Flower's largest modulus for the masks


def quantisation_levels(sites: int) -> int:
    """As many levels as the modulus allows: the sum of ``sites`` quantised values must stay below it
    (2^29 levels for 3 sites: a step of 3e-8 over +-8, against Flower's default 2^22)."""
    return 2 ** (32 - max(sites, 1).bit_length() - 1)


class _ConfiguredSites(LegacyFedAvg):
    """Sends each site the config our strategy made for it; keeps the per-site metrics and the secure mean."""

    def __init__(self, messages: list[Message]) -> None:
        super().__init__(accept_failures=True)
        self.messages = messages
        self.mean: np.ndarray | None = None
        self.site_metrics: dict[str, dict] = {}

    def configure_fit(self, server_round, parameters: Parameters, client_manager):
        proxies = {proxy.node_id: proxy for proxy in client_manager.all().values()}
        return [(proxies[m.metadata.dst_node_id], FitIns(parameters, dict(m.content["config"])))
                for m in self.messages if m.metadata.dst_node_id in proxies]

    def aggregate_fit(self, server_round, results, failures):
        # every result carries the SecAgg+ aggregate (the workflow put it there); the metrics are each site's own
        self.site_metrics = {str(proxy.node_id): dict(res.metrics) for proxy, res in results}
        if results:
            (self.mean,) = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}


def secure_train_round(grid: Grid, messages: list[Message], settings: FederationSettings, server_round: int,
                       weighting: str) -> tuple[np.ndarray | None, dict[str, dict], list[dict]]:
    """Run SecAgg+ over the sites of ``messages``: (the secure mean or None, per-site metrics, failures)."""
    vector = messages[0].content["arrays"][PACKED_KEY].numpy() if messages else None
    for message in messages:
        message.content["config"][SECURE_WEIGHT] = weighting
        message.content["config"][SECURE_MAX_WEIGHT] = 1.0 if weighting == "uniform" else settings.secagg_max_weight
        message.content["config"][SECURE_CLIPPING_RANGE] = settings.secagg_clipping_range
    manager = SimpleClientManager()
    for node_id in grid.get_node_ids():
        manager.register(GridClientProxy(node_id=node_id, grid=grid, run_id=grid.run.run_id))
    sites = _ConfiguredSites(messages)
    context = LegacyContext(Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(),
                                    run_config={}),
                            config=ServerConfig(num_rounds=settings.rounds), strategy=sites, client_manager=manager)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    if vector is not None:
        context.state.array_records[MAIN_PARAMS_RECORD] = messages[0].content["arrays"]
    workflow = SecAggPlusWorkflow(num_shares=settings.secagg_shares, reconstruction_threshold=settings.secagg_threshold,
                                  max_weight=1.0 if weighting == "uniform" else settings.secagg_max_weight,
                                  clipping_range=settings.secagg_clipping_range,
                                  quantization_range=quantisation_levels(len(messages)), modulus_range=MODULUS,
                                  timeout=settings.timeout)
    if vector is not None and len(messages) >= 2:
        workflow(grid, context)
    failed = [{"node": m.metadata.dst_node_id, "reason": "dropped out of the SecAgg+ round (not in the sum)"}
              for m in messages if str(m.metadata.dst_node_id) not in sites.site_metrics]
    if sites.mean is None:
        failed.append({"node": "all", "reason": "SecAgg+ halted (too few sites to reconstruct the sum); the global "
                                                "model is kept"})
        return None, sites.site_metrics, failed
    if weighting == "examples":
        _warn_if_imprecise(sites.site_metrics, settings, len(messages))
    mean = sites.mean.astype(np.float32)
    if not np.isfinite(mean).all():
        failed.append({"node": "all", "reason": "the securely aggregated weights are not finite; the global model "
                                                "is kept"})
        return None, sites.site_metrics, failed
    return mean, sites.site_metrics, failed


def _warn_if_imprecise(site_metrics: dict[str, dict], settings: FederationSettings, sites: int) -> None:
    """Each site quantises (n_i / max_weight) * w_i over +-R, so the mean's error per weight is about
    (sites * 2R / levels) / sum(n_i / max_weight): small when max_weight is near the largest site."""
    examples = [int(m.get("num-examples", 0)) for m in site_metrics.values()]
    if not examples or not sum(examples):
        return
    bound = sites * 2 * settings.secagg_clipping_range / quantisation_levels(sites) / (sum(examples)
                                                                                       / settings.secagg_max_weight)
    if bound > 1e-6:
        log.warning("SecAgg+ precision: the aggregate may be off by up to %.1e per weight because secagg_max_weight "
                    "= %g is far above the sites' examples (largest %d); set [federation] secagg_max_weight near "
                    "it", bound, settings.secagg_max_weight, max(examples))


def as_replies(mean: np.ndarray, sites: int) -> list[Message]:
    """The secure mean as ``sites`` identical unit-weight replies for the strategy's aggregate_train, marked as
    the SecAgg+ mean (the validating wrapper has no single site's update to check)."""
    replies = []
    for _ in range(sites):
        content = RecordDict({"arrays": ArrayRecord({PACKED_KEY: Array(mean)}),
                              "metrics": MetricRecord({"num-examples": 1, UNIFORM_WEIGHT: 1, SECURE_MEAN: 1})})
        replies.append(Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN))
    return replies
