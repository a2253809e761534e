"""The coordinator's side of model delivery: after the last round (and every ``deliver_every`` rounds) every site
that took part receives the global model, its EMA and the run's metadata in a ``query.deliver`` message, and
confirms that it stored them. A site that does not confirm is logged; the run's result does not depend on it."""

from __future__ import annotations

import json
import logging

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from ..common import messages
from ..common.app_identity import app_identity
from ..common.run_spec import RunSpec
from ..common.training.trainable import trained_part
from ..common.wire import pack
from .messaging import send_and_collect

log = logging.getLogger(__name__)
MESSAGE_TYPE = messages.DELIVER_MESSAGE_TYPE


def deliver_model(grid: Grid, nodes: list[int], spec: RunSpec, weights: dict[str, torch.Tensor],
                  ema: dict[str, torch.Tensor], metadata: dict, timeout: float) -> list[int]:
    """Send the model to ``nodes``; returns the nodes that stored it."""
    if not nodes:
        return []
    layout = spec.weight_layout()
    config = {**spec.message_config(), **app_identity(), messages.SERVER_ROUND: int(metadata["round"]),
              messages.DELIVERY: json.dumps(metadata, default=str),
              messages.INITIAL_MODEL: (metadata.get("initial_model") or {}).get("sha256", "")}
    outgoing = [Message(content=RecordDict({"arrays": pack(weights, layout), "ema": pack(ema, layout),
                                            "config": ConfigRecord(dict(config))}),
                        dst_node_id=node, message_type=MESSAGE_TYPE) for node in nodes]
    stored = []
    for reply in send_and_collect(grid, outgoing, timeout).replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("node %s did not store the round-%s model: %s", node, metadata.get("round"),
                        reply.error.reason)
        elif "metrics" in reply.content.metric_records and int(reply.content["metrics"].get("stored", 0)) == 1:
            stored.append(node)
    missing = sorted(set(nodes) - set(stored))
    log.info("round %s model delivered to %d of %d sites%s", metadata.get("round"), len(stored), len(nodes),
             f"; not stored by {missing}" if missing else "")
    return stored


def delivery_metadata(run_id: str, server_round: int, rounds: int, participants: set[int], spec: RunSpec,
                      site_privacy: dict[str, dict], entry: dict, initial: dict | None = None,
                      final: bool | None = None) -> dict:
    """What a site's model store keeps about the run: who trained, what it started from, what the sites' DP
    spent, the metrics. ``final``: the run's own model (by default the last round's; early stopping and the DP
    budget can make an earlier round's final)."""
    return {"run": run_id, "round": server_round, "rounds": rounds,
            "final": server_round == rounds if final is None else final,
            "initial_model": initial,
            "trained": trained_part(spec.schema, spec.model, spec.recipe.trainable).describe(),
            "sites": sorted(str(n) for n in participants), "schema": spec.schema.to_dict(),
            "strategy": entry.get("strategy"), "privacy": {"per_site": site_privacy,
                                                           "site_level_central": entry.get("central_dp")},
            "metrics": {"eval_loss": entry.get("eval_loss")}, **app_identity()}
