"""The coordinator's wrappers around a Flower strategy: a failed reply (an error, no content) is left out, not a
crash; the EMA moves every round, towards the kept model when nothing was aggregated; the secure mean passes
validation as one aggregate."""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import Error, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from meddiff.common.wire import PACKED_KEY, layout_of, pack
from meddiff.server.settings import FederationSettings
from meddiff.server.wrappers import SECURE_MEAN, ServerEMA, Validating

WEIGHTS = {"a": torch.zeros(3), "b": torch.zeros(2)}
LAYOUT = layout_of(WEIGHTS)


def _metadata(node: int) -> Metadata:
    return Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="i",
                    group_id="1", created_at=time.time(), ttl=3600.0, message_type="train")


def _reply(node: int, value: float, metrics: dict | None = None) -> Message:
    arrays = pack({k: torch.full_like(v, value) for k, v in WEIGHTS.items()}, LAYOUT)
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics or {"num-examples": 4})})
    return Message(content=content, metadata=_metadata(node))


def _failed(node: int) -> Message:
    return Message(error=Error(code=4001, reason="privacy budget exhausted"), metadata=_metadata(node))


def _chain() -> ServerEMA:
    strategy = ServerEMA(Validating(FedAvg(), FederationSettings(min_sites=2), LAYOUT), 0.9, LAYOUT,
                         {k: v.clone() for k, v in WEIGHTS.items()})
    global_model = pack(WEIGHTS, LAYOUT)
    strategy.current, strategy.inner.reference = global_model, {k: v.numpy() for k, v in WEIGHTS.items()}
    return strategy


def test_a_site_error_is_left_out_and_the_ema_moves_every_round():
    strategy = _chain()
    arrays, _ = strategy.aggregate_train(1, [_reply(1, 0.1), _reply(2, 0.3), _failed(3)])
    assert [r["node"] for r in strategy.inner.rejected] == [3] and "budget" in strategy.inner.rejected[0]["reason"]
    assert np.allclose(arrays[PACKED_KEY].numpy(), 0.2)  # the mean of the two accepted updates
    after_one = strategy.ema["a"].clone()
    assert not torch.equal(after_one, WEIGHTS["a"])
    strategy.current = arrays
    kept, _ = strategy.aggregate_train(2, [_failed(1), _failed(2)])  # nothing aggregated: the model is kept
    assert kept is None and float(strategy.ema["a"][0]) > float(after_one[0])  # still moved towards it


def test_the_secure_mean_is_aggregated_without_a_site_to_validate():
    validating = Validating(FedAvg(), FederationSettings(min_sites=2), LAYOUT)
    mean = [_reply(0, 0.5, {"num-examples": 1, SECURE_MEAN: 1}) for _ in range(2)]
    arrays, _ = validating.aggregate_train(1, mean)
    assert np.allclose(arrays[PACKED_KEY].numpy(), 0.5) and validating.rejected == []
