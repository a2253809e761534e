"""A round where one site trains with DP (and reports epsilon) and another without: Flower's FedAvg refuses
metric records of different keys, so the coordinator aggregates the common keys and keeps each site's own."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from meddiff.server.validation import common_metric_keys, metrics_of


def _reply(node: int, weights: np.ndarray, metrics: dict) -> Message:
    metadata = Metadata(run_id=1, message_id=f"r{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="q",
                        group_id="1", created_at=time.time(), ttl=600, message_type="train")
    return Message(metadata=metadata, content=RecordDict({"arrays": ArrayRecord({"weights": Array(weights)}),
                                                          "metrics": MetricRecord(metrics)}))


def test_a_dp_site_and_a_plain_site_are_aggregated_together():
    replies = [_reply(1, np.ones(4, np.float32), {"num-examples": 10, "train-loss": 0.5, "epsilon": 2.0}),
               _reply(2, np.zeros(4, np.float32), {"num-examples": 30, "train-loss": 0.3})]
    per_site = metrics_of(replies)
    common_metric_keys(replies)
    arrays, metrics = FedAvg().aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["weights"].numpy(), np.full(4, 0.25, np.float32))  # weighted by examples
    assert "train-loss" in metrics and "epsilon" not in metrics
    assert per_site["1"]["epsilon"] == 2.0 and "epsilon" not in per_site["2"]  # the site's own guarantee is kept
