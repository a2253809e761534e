"""The site's own guard around every message its ClientApp handles (the outermost Flower mod).

Before the handler: record what arrived in the audit log, and refuse the round (an Error reply, before any
training) when the code is not the approved one: this installation's hash differs from ``[trust] app_hash``, or
the coordinator announces other code than ours. After the handler: check what is about to leave (only the
``arrays`` record of model weights, allow-listed scalar metrics, and SecAgg+'s own protocol record) and record
it, or refuse to send it. Nothing else derived from the site's images can leave through a reply.
"""

from __future__ import annotations

import json
import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from ..common import messages
from ..common.app_identity import app_hash
from ..common.config import TrustConfig
from ..common.site_config import load_site_config
from ..common.jsonl import write_json_atomically
from .audit import AuditLog
from .site_paths import audit_path, site_state_dir, status_path

log = logging.getLogger(__name__)

ALLOWED_METRICS = frozenset({
    "num-examples", "train-loss", "steps", "seconds", "images-per-second", "skipped-nonfinite",
    "trained-parameters",  # how many of the network's parameters the round trained (all, or a part)
    "latent-values", "latent-mean", "latent-meansq",  # stage 1 of latent diffusion: the latent scale's moments
    "held-out", "eval-loss", "eval-loss-band1", "eval-loss-band2", "eval-loss-band3", "eval-loss-band4",
    "epsilon", "delta", "noise-multiplier",  # the site's DP guarantee after this round (no data)
    "dp-patient-level", "dp-units",  # who epsilon protects: 1 = each patient, 0 = each example; how many of them
    "dp-accountant-prv",  # which Opacus accountant computed epsilon: 1 = PRV, 0 = RDP
    "partition-id",  # simulation only: which virtual hospital replied (for the report's per-site curves)
    "stored",  # a delivered model was stored (1) or not (0)
    # where a round's time went, in seconds (benchmarks/federation_overhead.py prints them): coordinator's send to
    # the ClientApp process, process start to its handler, the site's data, network setup, packing, the worker
    # channel, the runner (the worker's hello, or importing torch + MONAI in the ClientApp); and whether the site
    # worker ran the round (1) or the ClientApp did (absent)
    "time-to-process", "time-to-handler", "time-data", "time-setup", "time-pack", "time-worker-transfer",
    "time-runner", "site-worker",
})
ALLOWED_ARRAY_RECORDS = frozenset({"arrays"})
# Flower's SecAgg+ stages: public keys, encrypted shares, masked (quantised) vectors
SECAGG_RECORD = RECORD_KEY_CONFIGS
PRIVACY_KEYS = ("epsilon", "delta", "noise-multiplier", "dp-patient-level", "dp-units", "dp-accountant-prv")

APP_REFUSED = 4003  # error code: the code is not the approved one
EGRESS_REFUSED = 4004  # error code: the reply carried something outside the allow-list


# Under SecAgg+ the masked-vector reply also carries Flower's legacy FitRes records: the parameters record (empty:
# the masked vector travels in SECAGG_RECORD), the metrics as a config record, the example count and a status.
SECURE_FITRES_KEYS = {"fitres.parameters": frozenset(), "fitres.metrics": ALLOWED_METRICS,
                      "fitres.num_examples": frozenset({"num_examples"}), "fitres.status": frozenset({"code", "message"})}


def _secure_fitres_problem(name: str, record) -> str:
    extra = sorted(set(record) - SECURE_FITRES_KEYS[name])
    return f"{name} carries {extra} beside SecAgg+'s masked vector" if extra else ""


def egress_problem(reply: Message) -> str:
    """Why this reply must not leave the site ('' when it may)."""
    if reply.has_error() or not reply.has_content():
        return ""
    content = reply.content
    secure = SECAGG_RECORD in content
    for name, record in content.items():
        if secure and name in SECURE_FITRES_KEYS:
            if problem := _secure_fitres_problem(name, record):
                return problem
            continue
        if isinstance(record, ArrayRecord) and name not in ALLOWED_ARRAY_RECORDS:
            return f"array record {name!r} is not model weights ('arrays')"
        if isinstance(record, MetricRecord):
            extra = sorted(set(record) - ALLOWED_METRICS)
            if extra:
                return f"metric keys outside the allow-list: {extra}"
        if isinstance(record, ConfigRecord) and name != SECAGG_RECORD:
            return f"config record {name!r}: a site sends no configuration"
    return ""


def _size(value) -> int:
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return 8  # a number


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
        elif isinstance(record, MetricRecord) or name == "fitres.metrics":
            metrics.update(dict(record))
        elif isinstance(record, ConfigRecord) and name == SECAGG_RECORD:  # SecAgg+'s masked vectors and keys
            for key, value in record.items():
                arrays[f"{name}/{key}"] = {"shape": [len(value)] if isinstance(value, list) else [],
                                           "dtype": type(value[0] if isinstance(value, list) and value
                                                         else value).__name__, "bytes": _size(value)}
    out = {"arrays": arrays, "bytes": sum(a["bytes"] for a in arrays.values())}
    if metrics:
        out["metrics"] = metrics
    return out


def initial_model_refusal(config, trust: TrustConfig) -> str:
    """Why a run's starting model is not one this site accepts ('' when it is, or nothing is pinned)."""
    if not trust.initial_models:
        return ""
    start = str(config.get(messages.INITIAL_MODEL, "")) or "scratch"
    if start in trust.initial_models:
        return ""
    return (f"the run starts from model {start if start == 'scratch' else 'sha256 ' + start[:16] + '...'}, not one "
            f"of the starting models this site accepts in site.toml [trust] initial_models "
            f"({', '.join(h[:16] for h in trust.initial_models)}): ask the coordinator which model the run starts "
            "from, and add its SHA-256 only if your data-protection officer approves")


def autoencoder_refusal(config, trust: TrustConfig) -> str:
    """Why a latent run's autoencoder is not one this site accepts ('' when it is, or nothing is pinned). The
    run's record names it; the round itself checks that the file received hashes to that name."""
    if not trust.autoencoders:
        return ""
    latent = config.get(messages.LATENT)
    named = str(json.loads(latent).get("sha256", "")) if latent else "pixel"
    if named in trust.autoencoders:
        return ""
    what = "is a pixel-space run" if named == "pixel" else f"encodes the site's images with autoencoder sha256 " \
                                                            f"{named[:16]}..."
    return (f"the run {what}, not one this site accepts in site.toml [trust] autoencoders "
            f"({', '.join(h[:16] for h in trust.autoencoders)}): ask the coordinator for the autoencoder file, and add "
            "its SHA-256 only if your data-protection officer approves")


def trust_refusal(message: Message, trust: TrustConfig) -> str:
    """Why this site must not run this message ('' when it may). Only messages with a run config are checked."""
    ours = app_hash()
    if trust.app_hash and trust.app_hash != ours:
        return (f"this site's meddiff installation has code hash {ours[:16]}..., not the {trust.app_hash[:16]}... "
                "approved in site.toml [trust] app_hash: reinstall the approved version, or approve this one")
    if not message.has_content() or "config" not in message.content:
        return ""
    for check in (initial_model_refusal, autoencoder_refusal):
        if refusal := check(message.content["config"], trust):
            return refusal
    if not trust.same_app_as_coordinator:
        return ""
    theirs = str(message.content["config"].get(messages.APP_HASH, ""))
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
        self.audit.append(event, run=context.run_id, round=int(config.get(messages.SERVER_ROUND, 0) or 0), peer=self.peer,
                          message_type=message.metadata.message_type, message_id=message.metadata.message_id,
                          **fields)

    def contact(self, message: Message, context: Context) -> None:
        if self.status is None:
            return
        config = message.content["config"] if message.has_content() and "config" in message.content else {}
        write_json_atomically(self.status, {"last_contact": time.time(), "run": context.run_id, "peer": self.peer,
                                            "round": int(config.get(messages.SERVER_ROUND, 0) or 0),
                                            "message_type": message.metadata.message_type})


def site_guard(message: Message, context: Context, call_next) -> Message:
    """A Flower mod: audit in, trust check, handler, egress check, audit out."""
    guard = SiteGuard(context)
    guard.contact(message, context)
    if guard.audit is not None:
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
    if guard.audit is None:  # a simulation's virtual site keeps no audit log
        return reply
    sent = record_summary(reply)
    privacy = {k: sent.get("metrics", {})[k] for k in PRIVACY_KEYS if k in sent.get("metrics", {})}
    error = {"error": f"{reply.error.code}: {reply.error.reason}"} if reply.has_error() else {}
    guard.record("sent", message, context, **sent, **({"privacy": privacy} if privacy else {}), **error)
    return reply
