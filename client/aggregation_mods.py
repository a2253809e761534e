"""Flower's mods on the site's train handler, each active only in the rounds whose server asks for it.

- ``clip_update_when_asked``: Flower's ``fixedclipping_mod`` (site-level DP with clipping at the site): the
  update ``w_site - w_global`` leaves the site clipped to the norm the server sends.
- ``secure_aggregation_when_asked``: Flower's ``secaggplus_mod`` (SecAgg+): the site sends its weights masked so
  that the server learns only the sum over the sites. SecAgg+ lives in Flower's legacy API (FitIns/FitRes
  records); ``_as_meddiff_round`` translates its training step into our message format and back, so the same
  handler (and its privacy ledger, DP-SGD and allow-listed metrics) serves both kinds of round.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from ..common.messages import SECURE_CLIPPING_RANGE, SECURE_MAX_WEIGHT, SECURE_WEIGHT
from ..common.wire import PACKED_KEY, packed_vector


def clip_update_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if KEY_CLIPPING_NORM in msg.content["config"]:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def secure_aggregation_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, _as_meddiff_round(call_next))
    return call_next(msg, context)


class SecureRoundError(RuntimeError):
    """This site cannot take part in a secure round; the message says why and what to change."""


def _as_meddiff_round(handler: ClientAppCallable) -> ClientAppCallable:
    def fit(msg: Message, context: Context) -> Message:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        (global_weights,) = parameters_to_ndarrays(fitins.parameters)
        config = dict(fitins.config)
        msg.content = RecordDict({"arrays": ArrayRecord({PACKED_KEY: Array(global_weights)}),
                                  "config": ConfigRecord(config)})
        reply = handler(msg, context)
        if reply.has_error():  # e.g. the privacy budget refused the round: SecAgg+ counts the site as dropped
            raise SecureRoundError(reply.error.reason)
        weights = packed_vector(reply.content["arrays"])
        metrics = dict(reply.content["metrics"])
        weight = 1 if config[SECURE_WEIGHT] == "uniform" else int(metrics["num-examples"])
        _check_quantisable(weights, weight, float(config[SECURE_MAX_WEIGHT]), float(config[SECURE_CLIPPING_RANGE]))
        # float64: Flower quantises (weight/max_weight * w + R) * levels / 2R, and in float32 the + R alone would
        # round to 1e-6 (the ulp at 8), far coarser than the 2^29 levels
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([weights.astype(np.float64)]), weight, metrics)
        reply.content = compat.fitres_to_recorddict(fitres, keep_input=True)
        return reply

    return fit


def _check_quantisable(weights: np.ndarray, weight: int, max_weight: float, clipping_range: float) -> None:
    """SecAgg+ quantises weight/max_weight * weights within +-clipping_range; beyond it would silently clip."""
    if weight > max_weight:
        raise SecureRoundError(f"this site's aggregation weight {weight} exceeds [federation] secagg_max_weight = "
                               f"{max_weight:g}; ask the coordinator to raise it")
    peak = float(np.abs(weights).max()) * weight / max_weight
    if peak > clipping_range:
        raise SecureRoundError(f"a weight of magnitude {peak:.3g} lies outside the SecAgg+ quantisation range "
                               f"+-{clipping_range:g}; ask the coordinator to raise [federation] secagg_clipping_range")
