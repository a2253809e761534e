"""The Flower ClientApp: thin handlers that hand each round to a runner (client/round_result.py) and answer.

What leaves the site: the model weights (an ArrayRecord named ``arrays``, packed by ``common.wire``) and the scalar
metrics in ``ALLOWED_METRICS``, nothing else; a handler that tried to send another key would fail before sending,
and the site's guard (client/site_guard.py, the outermost mod) checks every reply again and writes the audit log.

This module and the mods import neither torch nor MONAI: Flower starts a new process for every message, and
the runner decides what is heavy (a simulation's in-process runner; a deployed site's worker, client/site_worker.py).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..common.messages import SERVER_ROUND
from ..common.wire import pack_reply, packed_vector
from .aggregation_mods import clip_update_when_asked, secure_aggregation_when_asked
from .process_clock import process_started_at
from .round_result import RoundRunner
from .site_guard import ALLOWED_METRICS, site_guard

log = logging.getLogger(__name__)

BUDGET_EXCEEDED = 4001  # error code of a round a site refused because of its privacy budget

RunnerProvider = Callable[[Context], RoundRunner]  # who runs this node's rounds
StoreProvider = Callable[[Context], "object | None"]  # where delivered models go (a ModelStore; None: not kept)


def metric_record(metrics: dict) -> MetricRecord:
    """Scalar metrics only, and only allow-listed keys: nothing derived from images beyond these leaves."""
    leaked = sorted(set(metrics) - ALLOWED_METRICS)
    if leaked:
        raise ValueError(f"refusing to send metric keys outside the allow-list: {leaked}")
    return MetricRecord({k: float(v) if isinstance(v, float) else int(v) for k, v in metrics.items()})


def _partition(context: Context) -> dict:
    return {"partition-id": int(context.node_config["partition-id"])} if "partition-id" in context.node_config else {}


def _arrival(msg: Message, entered: float) -> dict:
    """How long the message took from the coordinator's send to this process, and this process to the handler
    (both clocks are the site's and the coordinator's: on two machines, their skew is in the first figure)."""
    started = process_started_at()
    if started is None:
        return {}
    return {"time-to-process": max(0.0, started - msg.metadata.created_at), "time-to-handler": entered - started}


def make_client_app(runner_provider: RunnerProvider, store_provider: StoreProvider = lambda context: None) -> ClientApp:
    """A ClientApp whose rounds run in ``runner_provider(context)`` and whose delivered models go to
    ``store_provider(context)``."""
    app = ClientApp()

    @app.train(mods=[site_guard, secure_aggregation_when_asked, clip_update_when_asked])  # outermost first
    def train(msg: Message, context: Context) -> Message:
        entered = time.time()
        config = dict(msg.content["config"])
        runner = runner_provider(context)  # the site worker's hello, or importing torch + MONAI here
        ready = time.time()
        global_vector = packed_vector(msg.content["arrays"])
        result = runner.train(config, global_vector, dict(context.node_config), str(context.run_id))
        if result.refusal:  # nothing trained, nothing sent
            log.error("%s", result.refusal)
            return Message(Error(code=BUDGET_EXCEEDED, reason=result.refusal), reply_to=msg)
        metrics = {**result.metrics, **_partition(context), **_arrival(msg, entered), "time-runner": ready - entered}
        log.info("round %s: %d steps, loss %.4f", config.get(SERVER_ROUND), metrics["steps"], metrics["train-loss"])
        content = RecordDict({"arrays": pack_reply(result.weights, global_vector.size),
                              "metrics": metric_record(metrics)})
        result.released()
        return Message(content=content, reply_to=msg)

    @app.evaluate(mods=[site_guard])
    def evaluate(msg: Message, context: Context) -> Message:
        config = dict(msg.content["config"])
        metrics = runner_provider(context).evaluate(config, packed_vector(msg.content["arrays"]),
                                                    dict(context.node_config), str(context.run_id))
        metrics.update(_partition(context))
        return Message(content=RecordDict({"metrics": metric_record(metrics)}), reply_to=msg)

    @app.query("deliver", mods=[site_guard])
    def deliver(msg: Message, context: Context) -> Message:
        from .delivery import store_delivered_model  # torch: once per delivery, not in every round's process

        stored = store_delivered_model(msg, store_provider(context))
        return Message(content=RecordDict({"metrics": metric_record({"stored": int(stored is not None)})}),
                       reply_to=msg)

    return app
