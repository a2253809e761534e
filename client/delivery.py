"""The site's side of model delivery: a ``query.deliver`` message carries the global model, its EMA and the run's
metadata; the site keeps them in its model store (client/model_store.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flwr.app import Message

from ..common import messages
from ..common.run_spec import RunSpec
from ..common.wire import unpack
from .model_store import ModelStore

log = logging.getLogger(__name__)


def store_delivered_model(message: Message, store: ModelStore | None) -> Path | None:
    """The stored file, or None when this node keeps no store (a simulation's virtual site)."""
    if store is None:
        return None
    config = message.content["config"]
    spec = RunSpec.from_config(config)
    layout = spec.weight_layout()  # a model of another layout is refused here, with both lengths named
    weights, ema = unpack(message.content["arrays"], layout), unpack(message.content["ema"], layout)
    delivery = json.loads(str(config[messages.DELIVERY]))
    path = store.save(weights, ema, spec.model_meta(), delivery, spec.model_state())
    log.info("stored the global model of run %s, round %s%s: %s", delivery.get("run"), delivery.get("round"),
             " (final)" if delivery.get("final") else "", path)
    return path
