"""Bad replies are rejected by node id and the aggregate equals the aggregate of the honest replies."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import Error, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from meddiff.common.config import ConfigError
from meddiff.common.messages import UNIFORM_WEIGHT
from meddiff.server import central_dp

from meddiff.common.wire import layout_of, pack, unpack_numpy
from meddiff.server.validation import filter_replies
from meddiff.server.settings import FederationSettings
from meddiff.server.validation import validate_updates

GLOBAL = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}
LAYOUT = layout_of({k: torch.from_numpy(v) for k, v in GLOBAL.items()})


def _update(scale: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + scale * rng.normal(size=v.shape)).astype(np.float32) for k, v in GLOBAL.items()}


def _reply(node: int, arrays: dict[str, np.ndarray], examples: int = 10) -> Message:
    """A train reply as the SuperLink hands it to the ServerApp, from node ``node``."""
    content = RecordDict({"arrays": pack({k: torch.from_numpy(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": examples})})
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="i",
                        group_id="1", created_at=time.time(), ttl=3600.0, message_type="train")
    return Message(content=content, metadata=metadata)


def test_nan_wrong_shape_and_huge_updates_are_rejected_by_node():
    updates = {1: _update(0.1, 1), 2: _update(0.1, 2), 3: _update(0.1, 3)}
    updates[4] = {**_update(0.1, 4), "w": np.full((4, 3), np.nan, np.float32)}
    updates[5] = {**_update(0.1, 5), "b": np.zeros(4, np.float32)}
    updates[6] = _update(10.0, 6)  # about 100x the others' update norm
    updates[7] = {"w": updates[1]["w"]}
    verdicts = {v.node_id: v for v in validate_updates(updates, GLOBAL, max_norm_ratio=10.0)}
    assert [n for n, v in verdicts.items() if v.accepted] == [1, 2, 3]
    assert "NaN" in verdicts[4].reason and "shape" in verdicts[5].reason
    assert "median" in verdicts[6].reason and "missing" in verdicts[7].reason


def test_with_two_sites_one_huge_update_is_still_caught():
    verdicts = validate_updates({1: _update(0.1, 1), 2: _update(10.0, 2)}, GLOBAL, 10.0)
    assert [v.accepted for v in verdicts] == [True, False]


def test_the_aggregate_of_a_round_with_bad_replies_equals_the_honest_aggregate():
    honest = [_reply(1, _update(0.1, 1), 10), _reply(2, _update(0.1, 2), 30), _reply(3, _update(0.1, 3), 20)]
    bad = [_reply(4, {**_update(0.1, 4), "w": np.full((4, 3), np.inf, np.float32)}),
           _reply(5, {**_update(0.1, 5), "w": np.zeros((5, 3), np.float32)}),  # packed: 18 values, not 15
           _reply(6, _update(10.0, 6), 1000)]
    accepted, rejected, norms = filter_replies(honest + bad, GLOBAL, LAYOUT, FederationSettings(), server_round=1)
    assert sorted(norms) == [1, 2, 3, 6] and norms[6] > 10 * max(norms[1], norms[2], norms[3])  # measured, logged
    reasons = {r["node"]: r["reason"] for r in rejected}
    assert sorted(reasons) == [4, 5, 6]
    assert "w: contains NaN" in reasons[4] and "18 values, the model has 15" in reasons[5] and "median" in reasons[6]
    with_filter, _ = FedAvg().aggregate_train(1, accepted)
    expected, _ = FedAvg().aggregate_train(1, honest)
    assert np.array_equal(with_filter["weights"].numpy(), expected["weights"].numpy())
    manual = sum(n * unpack_numpy(m.content["arrays"], LAYOUT)["w"] for n, m in zip((10, 30, 20), honest)) / 60
    assert np.allclose(unpack_numpy(with_filter, LAYOUT)["w"], manual, atol=1e-6)
    unfiltered, _ = FedAvg().aggregate_train(1, [m for m in honest + bad if m.metadata.src_node_id != 5])
    assert not np.isfinite(unfiltered["weights"].numpy()).all()  # without validation the round would be ruined


def _failed_reply(node: int) -> Message:
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="i",
                        group_id="1", created_at=time.time(), ttl=3600.0, message_type="train")
    return Message(error=Error(code=4001, reason="privacy budget exhausted"), metadata=metadata)


def test_with_central_dp_a_failed_site_does_not_void_the_round():
    settings = FederationSettings(central_dp="server-clipping", dp_noise_multiplier=1.0, dp_clipping_norm=1.0)
    replies = [_reply(1, _update(0.1, 1)), _reply(2, _update(0.1, 2)), _failed_reply(3)]
    flowers_own = DifferentialPrivacyServerSideFixedClipping(FedAvg(), 1.0, 1.0, 3)
    flowers_own.current_arrays = pack({k: torch.from_numpy(v) for k, v in GLOBAL.items()})
    assert flowers_own.aggregate_train(1, replies) == (None, None)  # Flower voids the round on any error reply
    accepted, rejected, _ = filter_replies(replies, GLOBAL, LAYOUT, settings, server_round=1)
    assert [r["node"] for r in rejected] == [3] and "budget" in rejected[0]["reason"]
    dp = DifferentialPrivacyServerSideFixedClipping(FedAvg(weighted_by_key=UNIFORM_WEIGHT), 1.0, 1.0, 3)
    dp.current_arrays = flowers_own.current_arrays
    central_dp.prepare_aggregation(dp, accepted)
    aggregated, _ = dp.aggregate_train(1, accepted)
    assert aggregated is not None and dp.num_sampled_clients == 2  # noise std z C / 2 for the 2 sites averaged


def test_with_clipping_at_the_sites_an_unclipped_update_is_rejected():
    settings = FederationSettings(central_dp="client-clipping", dp_clipping_norm=0.5)
    clipped = {k: v * 0.0 + 0.01 for k, v in GLOBAL.items()}  # norm 0.039
    replies = [_reply(1, clipped), _reply(2, _update(1.0, 2))]  # norm about 3.9: the site did not clip
    accepted, rejected, _ = filter_replies(replies, GLOBAL, LAYOUT, settings, server_round=1)
    assert [m.metadata.src_node_id for m in accepted] == [1]
    assert "exceeds the clipping norm 0.5" in rejected[0]["reason"]


@pytest.mark.parametrize("settings, message", [
    (dict(central_dp="server-clipping", strategy="krum"), "uniform FedAvg"),
    (dict(central_dp="server-clipping", fraction_train=0.5), "fraction_train = 1"),
    (dict(secure_aggregation=True, strategy="fedmedian"), "mean of the updates"),
    (dict(secure_aggregation=True, central_dp="server-clipping"), "client-clipping"),
    (dict(central_dp="local"), "is not one of"),
])
def test_privacy_settings_that_cannot_hold_are_refused_by_name(settings, message):
    with pytest.raises(ConfigError, match=message):
        FederationSettings(**settings)
