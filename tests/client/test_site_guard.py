"""The site's own guard (the outermost mod of every ClientApp handler), called through a real Flower ClientApp:
what may leave, what is refused, what the audit log records, and the code-trust check."""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import (Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict)
from flwr.clientapp import ClientApp

from meddiff.client.audit import AuditLog
from meddiff.client.site_guard import APP_REFUSED, EGRESS_REFUSED, site_guard
from meddiff.client.site_paths import audit_path, site_state_dir
from meddiff.common.app_identity import app_hash


def _message(config: dict, message_type: str = "train") -> Message:
    metadata = Metadata(run_id=7, message_id=f"m{time.monotonic_ns()}", src_node_id=0, dst_node_id=1,
                        reply_to_message_id="", group_id="1", created_at=time.time(), ttl=600,
                        message_type=message_type)
    return Message(metadata=metadata, content=RecordDict({"config": ConfigRecord(config)}))


def _app(reply_content: RecordDict) -> ClientApp:
    app = ClientApp()

    @app.train(mods=[site_guard])
    def train(msg: Message, context: Context) -> Message:
        return Message(reply_content, reply_to=msg)

    return app


@pytest.fixture
def site(tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('site_id = "a"\n[data]\npath = "phantom"\n')
    context = Context(run_id=7, node_id=1, node_config={"site-config": str(config), "superlink": "10.0.0.1:9092"},
                      state=RecordDict(), run_config={})
    return config, context


def _weights() -> ArrayRecord:
    return ArrayRecord({"weights": Array(np.arange(10, dtype=np.float32))})


def test_a_reply_with_a_metric_key_outside_the_allow_list_is_refused_and_audited(site):
    config, context = site
    app = _app(RecordDict({"arrays": _weights(),
                           "metrics": MetricRecord({"train-loss": 0.1, "mean-patient-age": 54.0})}))
    reply = app(_message({"server-round": 3, "app-hash": app_hash()}), context)
    assert reply.has_error() and reply.error.code == EGRESS_REFUSED
    assert "mean-patient-age" in reply.error.reason
    records = AuditLog(audit_path(site_state_dir(config))).records()
    assert [r["event"] for r in records] == ["received", "refused"]
    assert "mean-patient-age" in records[-1]["reason"] and records[-1]["round"] == 3


@pytest.mark.parametrize("content", [
    RecordDict({"arrays": _weights(), "images": ArrayRecord({"x": Array(np.zeros((2, 2), np.float32))})}),
    RecordDict({"arrays": _weights(), "notes": ConfigRecord({"diagnosis": "glioma"})}),
], ids=["extra array record", "config record"])
def test_anything_but_weights_and_metrics_is_refused(site, content):
    _, context = site
    reply = _app(content)(_message({"server-round": 1, "app-hash": app_hash()}), context)
    assert reply.has_error() and reply.error.code == EGRESS_REFUSED


def test_an_allowed_reply_leaves_and_its_arrays_and_metrics_are_in_the_audit_log(site):
    config, context = site
    app = _app(RecordDict({"arrays": _weights(), "metrics": MetricRecord({"train-loss": 0.25, "epsilon": 1.5})}))
    reply = app(_message({"server-round": 2, "app-hash": app_hash()}), context)
    assert not reply.has_error() and reply.content["metrics"]["train-loss"] == 0.25
    sent = AuditLog(audit_path(site_state_dir(config))).records()[-1]
    assert sent["event"] == "sent" and sent["peer"] == "10.0.0.1:9092" and sent["round"] == 2
    weights = sent["arrays"]["arrays/weights"]  # bytes: the serialised array as it leaves (values + npy header)
    assert weights["shape"] == [10] and weights["dtype"] == "float32" and 40 <= weights["bytes"] < 40 + 256
    assert sent["metrics"] == {"train-loss": 0.25, "epsilon": 1.5} and sent["privacy"] == {"epsilon": 1.5}


def test_a_coordinator_running_other_code_is_refused_before_the_handler_runs(site):
    _, context = site
    ran = []
    app = ClientApp()

    @app.train(mods=[site_guard])
    def train(msg, ctx):
        ran.append(1)
        return Message(RecordDict({"metrics": MetricRecord({"train-loss": 0.1})}), reply_to=msg)

    reply = app(_message({"server-round": 1, "app-hash": "f" * 64}), context)
    assert reply.has_error() and reply.error.code == APP_REFUSED and "coordinator runs meddiff code" in reply.error.reason
    assert ran == []


def test_an_installation_other_than_the_approved_one_is_refused(site):
    config, context = site
    config.write_text(config.read_text() + f'[trust]\napp_hash = "{"0" * 64}"\n')
    reply = _app(RecordDict({"metrics": MetricRecord({"train-loss": 0.1})}))(
        _message({"server-round": 1, "app-hash": app_hash()}), context)
    assert reply.has_error() and reply.error.code == APP_REFUSED and "approved in site.toml" in reply.error.reason
