"""Validation of every training reply before it reaches the aggregate (the ``Validating`` wrapper applies it).

A reply is rejected (logged with its node id, excluded, the round goes on) when its arrays are missing or
extra, of the wrong shape or dtype, not finite, or when its update norm ||w_site - w_global|| is more than
``max_norm_ratio`` times the median norm of the *other* replies of the round (leave-one-out, so that with
two sites one broken update cannot hide by dragging the median up), or when it is larger than ``max_update_norm``
(site-level DP with clipping at the sites: an unclipped update would void the server's guarantee).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from flwr.app import Message, MetricRecord

from ..common.wire import Layout, WireFormatError, unpack_numpy
from .settings import FederationSettings

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Verdict:
    node_id: int
    accepted: bool
    reason: str = ""
    update_norm: float = float("nan")


def structural_problem(arrays: Arrays, reference: Arrays) -> str:
    """Why ``arrays`` cannot be averaged with the global model, or '' when it can."""
    missing, extra = sorted(set(reference) - set(arrays)), sorted(set(arrays) - set(reference))
    if missing or extra:
        return f"keys differ from the global model (missing {missing[:3]}, unexpected {extra[:3]})"
    for key, expected in reference.items():
        value = arrays[key]
        if value.shape != expected.shape:
            return f"{key}: shape {tuple(value.shape)}, expected {tuple(expected.shape)}"
        if value.dtype != expected.dtype:
            return f"{key}: dtype {value.dtype}, expected {expected.dtype}"
        if not np.isfinite(value).all():
            return f"{key}: contains NaN or infinite values"
    return ""


def update_norm(arrays: Arrays, reference: Arrays) -> float:
    return float(np.sqrt(sum(float(np.sum((arrays[k].astype(np.float64) - reference[k]) ** 2)) for k in reference)))


def validate_updates(updates: dict[int, Arrays], reference: Arrays, max_norm_ratio: float = 10.0,
                     max_update_norm: float = float("inf")) -> list[Verdict]:
    """One verdict per node id, in the order given."""
    verdicts: dict[int, Verdict] = {}
    norms: dict[int, float] = {}
    for node, arrays in updates.items():
        problem = structural_problem(arrays, reference)
        if problem:
            verdicts[node] = Verdict(node, False, problem)
        else:
            norms[node] = update_norm(arrays, reference)
    for node, norm in norms.items():
        others = [n for other, n in norms.items() if other != node]
        median = float(np.median(others)) if others else norm
        if norm > max_update_norm * (1 + 1e-4):  # float32 rounding of a clipped update stays far below 1e-4
            verdicts[node] = Verdict(node, False, f"update norm {norm:.6g} exceeds the clipping norm {max_update_norm:g}: "
                                                  "the site did not clip its update", norm)
        elif others and norm > max_norm_ratio * max(median, 1e-12):
            verdicts[node] = Verdict(node, False, f"update norm {norm:.3g} is {norm / max(median, 1e-12):.1f}x the "
                                                  f"median of the other sites ({median:.3g}); limit {max_norm_ratio}x",
                                     norm)
        else:
            verdicts[node] = Verdict(node, True, "", norm)
    return [verdicts[node] for node in updates]


def filter_replies(replies: list[Message], global_arrays: dict[str, np.ndarray], layout: Layout,
                    settings: FederationSettings, server_round: int) -> tuple[list[Message], list[dict], dict[int, float]]:
    """Replies that may be aggregated, one record per rejected or failed reply, and each measured update norm
    ||w_site - w_global|| by node id."""
    rejected, candidates, unpacked = [], {}, {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            rejected.append({"node": node, "reason": f"site error: {reply.error.reason}"})
            continue
        if "arrays" not in reply.content.array_records:
            rejected.append({"node": node, "reason": "reply carries no 'arrays' record"})
            continue
        try:
            unpacked[node] = unpack_numpy(reply.content["arrays"], layout)
        except WireFormatError as error:
            rejected.append({"node": node, "reason": str(error)})
            continue
        candidates[node] = reply
    if settings.central_dp == "off":
        limits = {"max_norm_ratio": settings.max_norm_ratio}
    else:  # with central DP, who is aggregated must not depend on the other sites' updates: clipping bounds them
        limits = {"max_norm_ratio": float("inf"),
                  "max_update_norm": settings.dp_clipping_norm if settings.central_dp == "client-clipping"
                  else float("inf")}
    verdicts = validate_updates(unpacked, global_arrays, **limits)
    accepted = []
    for verdict in verdicts:
        if verdict.accepted:
            accepted.append(candidates[verdict.node_id])
        else:
            rejected.append({"node": verdict.node_id, "reason": verdict.reason})
    for r in rejected:
        log.warning("round %d: reply from node %s rejected: %s", server_round, r["node"], r["reason"])
    norms = {v.node_id: v.update_norm for v in verdicts if np.isfinite(v.update_norm)}
    return accepted, rejected, norms


def metrics_of(replies: list[Message]) -> dict[str, dict]:
    """Each replying site's scalar metrics, by node id."""
    out = {}
    for reply in replies:
        if not reply.has_error() and "metrics" in reply.content.metric_records:
            out[str(reply.metadata.src_node_id)] = dict(reply.content["metrics"])
    return out


def common_metric_keys(replies: list[Message]) -> None:
    """Keep in each reply only the metric keys every reply has: Flower's strategies refuse to aggregate records of
    different keys, and sites differ (a site with DP also reports epsilon). Per-site values are kept apart."""
    records = [reply.content["metrics"] for reply in replies if "metrics" in reply.content.metric_records]
    if len(records) != len(replies):
        return
    common = set.intersection(*(set(record) for record in records)) if records else set()
    for reply, record in zip(replies, records):
        if set(record) != common:
            reply.content["metrics"] = MetricRecord({k: record[k] for k in record if k in common})
