"""The Flower ClientApp: thin handlers around client/round.py (all logic is testable without Flower).

What leaves the site: the model weights (an ArrayRecord named ``arrays``, packed by ``common.wire``) and the scalar metrics in
``ALLOWED_METRICS``, nothing else; a handler that tried to send another key would fail before sending, and the
site's guard (client/site_guard.py, the outermost mod) checks every reply again and writes the audit log.
"""

from __future__ import annotations

import logging
from typing import Callable

from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..common.messages import SERVER_ROUND, TrainInstruction
from ..common.run_spec import RunSpec
from ..common.wire import pack, unpack
from ..privacy.ledger import BudgetExceeded, UnitMismatch
from .aggregation_mods import clip_update_when_asked, secure_aggregation_when_asked
from .delivery import store_delivered_model
from .model_store import ModelStore
from .round import evaluate_round, train_round
from .site_data import SiteData
from .site_guard import ALLOWED_METRICS, site_guard

log = logging.getLogger(__name__)

BUDGET_EXCEEDED = 4001  # error code of a round a site refused because of its privacy budget

SiteProvider = Callable[[Context, RunSpec], SiteData]  # the run spec says at which resolution
StoreProvider = Callable[[Context], "ModelStore | None"]  # where delivered models go (None: not kept)


def metric_record(metrics: dict) -> MetricRecord:
    """Scalar metrics only, and only allow-listed keys: nothing derived from images beyond these leaves."""
    leaked = sorted(set(metrics) - ALLOWED_METRICS)
    if leaked:
        raise ValueError(f"refusing to send metric keys outside the allow-list: {leaked}")
    return MetricRecord({k: float(v) if isinstance(v, float) else int(v) for k, v in metrics.items()})


def _partition(context: Context) -> dict:
    return {"partition-id": int(context.node_config["partition-id"])} if "partition-id" in context.node_config else {}


def make_client_app(site_provider: SiteProvider, store_provider: StoreProvider = lambda context: None) -> ClientApp:
    """A ClientApp whose site data comes from ``site_provider(context, spec)`` (a simulation partition, or the
    data named by the site's site.toml) and whose delivered models go to ``store_provider(context)``."""
    app = ClientApp()

    @app.train(mods=[site_guard, secure_aggregation_when_asked, clip_update_when_asked])  # outermost first
    def train(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        spec, instruction = RunSpec.from_config(config), TrainInstruction.from_config(config)
        site = site_provider(context, spec)
        layout = spec.weight_layout()
        try:
            outcome = train_round(spec, unpack(msg.content["arrays"], layout), site, instruction,
                                  str(context.run_id), site.runtime, context.node_config.get("device") or None)
        except (BudgetExceeded, UnitMismatch) as refusal:  # nothing trained, nothing sent
            log.error("%s", refusal)
            return Message(Error(code=BUDGET_EXCEEDED, reason=str(refusal)), reply_to=msg)
        metrics = {**outcome.metrics, **_partition(context)}
        log.info("site %s round %d: %d steps, loss %.4f", site.site_id, instruction.server_round, metrics["steps"],
                 metrics["train-loss"])
        content = RecordDict({"arrays": pack(outcome.weights, layout), "metrics": metric_record(metrics)})
        outcome.released()
        return Message(content=content, reply_to=msg)

    @app.evaluate(mods=[site_guard])
    def evaluate(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        spec = RunSpec.from_config(config)
        metrics = evaluate_round(spec, unpack(msg.content["arrays"], spec.weight_layout()), site_provider(context, spec),
                                 seed=int(config.get(SERVER_ROUND, 0)), device=context.node_config.get("device") or None)
        metrics.update(_partition(context))
        return Message(content=RecordDict({"metrics": metric_record(metrics)}), reply_to=msg)

    @app.query("deliver", mods=[site_guard])
    def deliver(msg: Message, context: Context) -> Message:
        stored = store_delivered_model(msg, store_provider(context))
        return Message(content=RecordDict({"metrics": metric_record({"stored": int(stored is not None)})}),
                       reply_to=msg)

    return app
