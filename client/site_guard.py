"""The site's own guard around every message its ClientApp handles (the outermost Flower mod).

Before the handler: record what arrived in the audit log, and refuse the round (an Error reply, before any
training) when the code is not the approved one: this installation's hash differs from ``[trust] app_hash``, or
the coordinator announces other code than ours. After the handler: check what is about to leave (only the
``arrays`` record of model weights, allow-listed scalar metrics, and SecAgg+'s own protocol record) and record
it, or refuse to send it. Nothing else derived from the site's images can leave through a reply.
"""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord

from ..common.app_identity import app_hash
from ..common.config import TrustConfig, load_site_config
from .audit import AuditLog
from .site_paths import audit_path, site_state_dir, status_path, write_json_atomically

log = logging.getLogger(__name__)

ALLOWED_METRICS = frozenset({
    "num-examples", "train-loss", "steps", "seconds", "images-per-second", "skipped-nonfinite",
    "held-out", "eval-loss", "eval-loss-band1", "eval-loss-band2", "eval-loss-band3", "eval-loss-band4",
    "epsilon", "delta", "noise-multiplier",  # the site's sample-level DP guarantee after this round (no data)
    "partition-id",  # simulation only: which virtual hospital replied (for the report's per-site curves)
    "stored",  # a delivered model was stored (1) or not (0)
})
ALLOWED_ARRAY_RECORDS = frozenset({"arrays"})
SECAGG_RECORD = "secaggplus"  # Flower's SecAgg+ stages: public keys, encrypted shares, masked (quantised) vectors
PRIVACY_KEYS = ("epsilon", "delta", "noise-multiplier")

APP_REFUSED = 4003  # error code: the code is not the approved one
EGRESS_REFUSED = 4004  # error code: the reply carried something outside the allow-list


def egress_problem(reply: Message) -> str:
    """Why this reply must not leave the site ('' when it may)."""
    if reply.has_error() or not reply.has_content():
        return ""
    content = reply.content
    for name, record in content.items():
        if isinstance(record, ArrayRecord) and name not in ALLOWED_ARRAY_RECORDS:
            return f"array record {name!r} is not model weights ('arrays')"
        if isinstance(record, MetricRecord):
            extra = sorted(set(record) - ALLOWED_METRICS)
            if extra:
                return f"metric keys outside the allow-list: {extra}"
        if isinstance(record, ConfigRecord) and name != SECAGG_RECORD:
            return f"config record {name!r}: a site sends no configuration"
    return ""


def record_summary(message: Message) -> dict:
    """Names, shapes, dtypes and byte sizes of every array (serialised, as on the wire); metric keys and values."""
    if message.has_error() or not message.has_content():
        return {}
    arrays, metrics = {}, {}
    for name, record in message.content.items():
        if isinstance(record, ArrayRecord):
            for key, array in record.items():
                arrays[f"{name}/{key}"] = {"shape": list(array.shape), "dtype": array.dtype,
                                           "bytes": len(array.data)}
        elif isinstance(record, MetricRecord):
            metrics.update(dict(record))
    out = {"arrays": arrays, "bytes": sum(a["bytes"] for a in arrays.values())}
    if metrics:
        out["metrics"] = metrics
    return out


def trust_refusal(message: Message, trust: TrustConfig) -> str:
    """Why this site must not run this message ('' when it may). Only messages with a run config are checked."""
    ours = app_hash()
    if trust.app_hash and trust.app_hash != ours:
        return (f"this site's meddiff installation has code hash {ours[:16]}..., not the {trust.app_hash[:16]}... "
                "approved in site.toml [trust] app_hash: reinstall the approved version, or approve this one")
    if not trust.same_app_as_coordinator or not message.has_content() or "config" not in message.content:
        return ""
    theirs = str(message.content["config"].get("app-hash", ""))
    if theirs != ours:
        return (f"the coordinator runs meddiff code {theirs[:16] or 'it does not name'}..., this site "
                f"{ours[:16]}...: the same version must run on both ends (set [trust] same_app_as_coordinator = "
                "false only if your data-protection officer approves)")
    return ""


class SiteGuard:
    """Audit log, status file and trust settings of the site this ClientApp serves (none in a simulation)."""

    def __init__(self, context: Context) -> None:
        config_path = context.node_config.get("site-config")
        self.peer = str(context.node_config.get("superlink", ""))
        if config_path:
            state = site_state_dir(str(config_path))
            self.audit = AuditLog(audit_path(state))
            self.status = status_path(state)
            self.trust = load_site_config(str(config_path)).trust
        else:
            self.audit, self.status, self.trust = None, None, None

    def record(self, event: str, message: Message, context: Context, **fields) -> None:
        if self.audit is None:
            return
        config = message.content["config"] if message.has_content() and "config" in message.content else {}
        self.audit.append(event, run=context.run_id, round=int(config.get("server-round", 0) or 0), peer=self.peer,
                          message_type=message.metadata.message_type, message_id=message.metadata.message_id,
                          **fields)

    def contact(self, message: Message, context: Context) -> None:
        if self.status is None:
            return
        config = message.content["config"] if message.has_content() and "config" in message.content else {}
        write_json_atomically(self.status, {"last_contact": time.time(), "run": context.run_id, "peer": self.peer,
                                            "round": int(config.get("server-round", 0) or 0),
                                            "message_type": message.metadata.message_type})


def site_guard(message: Message, context: Context, call_next) -> Message:
    """A Flower mod: audit in, trust check, handler, egress check, audit out."""
    guard = SiteGuard(context)
    guard.contact(message, context)
    guard.record("received", message, context, **record_summary(message))
    refusal = trust_refusal(message, guard.trust) if guard.trust is not None else ""
    if refusal:
        log.error("refused %s: %s", message.metadata.message_type, refusal)
        guard.record("refused", message, context, reason=refusal)
        return Message(Error(code=APP_REFUSED, reason=refusal), reply_to=message)
    try:
        reply = call_next(message, context)
    except Exception as error:  # the round fails; the daemon goes on (Flower turns this into an error reply)
        guard.record("failed", message, context, reason=f"{type(error).__name__}: {error}")
        raise
    problem = egress_problem(reply)
    if problem:
        log.error("refused to send the reply to %s: %s", message.metadata.message_type, problem)
        guard.record("refused", message, context, reason=f"egress: {problem}")
        return Message(Error(code=EGRESS_REFUSED, reason=f"the site's guard refused its own reply: {problem}"),
                       reply_to=message)
    sent = record_summary(reply)
    privacy = {k: sent.get("metrics", {})[k] for k in PRIVACY_KEYS if k in sent.get("metrics", {})}
    error = {"error": f"{reply.error.code}: {reply.error.reason}"} if reply.has_error() else {}
    guard.record("sent", message, context, **sent, **({"privacy": privacy} if privacy else {}), **error)
    return reply
