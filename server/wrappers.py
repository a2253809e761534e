"""What the coordinator adds to any Flower strategy, as wrappers (the pattern of Flower's own DP wrappers): each
delegates to the strategy inside it and changes one thing.

    ServerEMA( [KeepFrozen]( Validating( CentralDP( FedAvg | FedProx | FedAdam | ... ) ) ) )
                                                                            server/strategies.py builds it

- ``Validating``: every reply is checked before it reaches the aggregate (validation.py); rejected and failed
  replies are left out and recorded, and a round with fewer than min_sites accepted replies keeps the model.
- ``CentralDP``: Flower's fixed-clipping wrapper and accountant (central_dp.py), told how many sites it samples
  and aggregates so that the noise fits the sites actually averaged, with uniform weights.
- ``KeepFrozen``: a run that trains a part of the network ([train] trainable) leaves the rest exactly as it was.
- ``ServerEMA``: an exponential moving average of the global model over rounds, kept beside it.
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ..common.training.ema import ema_decay
from ..common.wire import PACKED_KEY, Layout, pack_vector, packed_vector, unpack, unpack_numpy
from . import central_dp
from .settings import FederationSettings
from .validation import filter_replies, metrics_of, common_metric_keys

log = logging.getLogger(__name__)
SECURE_MEAN = "secure-mean"  # marks the replies that carry a SecAgg+ mean (server/secure_round.py), not a site's


class Wrapper(Strategy):
    """Delegates every call to ``inner``."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()


class Validating(Wrapper):
    """Leaves out replies that fail validation; ``rejected`` and ``site_metrics`` describe the last round."""

    def __init__(self, inner: Strategy, settings: FederationSettings, layout: Layout) -> None:
        super().__init__(inner)
        self.settings, self.layout = settings, layout
        self.reference: dict[str, np.ndarray] = {}
        self.rejected: list[dict] = []
        self.site_metrics: dict[str, dict] = {}

    def configure_train(self, server_round, arrays, config, grid):
        self.reference = unpack_numpy(arrays, self.layout)  # the global model the updates are measured against
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        if not replies:  # a round that gathered nothing (the SecAgg+ sum failed): nothing to aggregate
            self.rejected, self.site_metrics = [], {}
            return None, None
        if all(is_secure_mean(r) for r in replies):
            return super().aggregate_train(server_round, replies)  # one secure aggregate: no site to check
        accepted, self.rejected, norms = filter_replies(replies, self.reference, self.layout, self.settings,
                                                        server_round)
        self.site_metrics = metrics_of(accepted)
        for node, metrics in self.site_metrics.items():  # measured here, not sent by the site
            if int(node) in norms:
                metrics["update-norm"] = norms[int(node)]
        if len(accepted) < self.settings.min_sites:
            log.error("round %d: %d accepted replies, fewer than min_sites = %d; the global model is kept",
                      server_round, len(accepted), self.settings.min_sites)
            return None, None
        common_metric_keys(accepted)
        return super().aggregate_train(server_round, accepted)


class CentralDP(Wrapper):
    """Site-level DP at the server around Flower's fixed-clipping wrapper (central_dp.py says what it protects)."""

    def configure_train(self, server_round, arrays, config, grid):
        return central_dp.configure_train(self.inner, server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        central_dp.prepare_aggregation(self.inner, replies)
        return super().aggregate_train(server_round, replies)


class ServerEMA(Wrapper):
    """Keeps ``ema``, the moving average over rounds of the global model (float tensors; others copied). It moves
    every round, towards the unchanged model when a round aggregated nothing. The aggregate it passes on is
    float32, the global model's type (server optimizers such as FedAdam compute in float64)."""

    def __init__(self, inner: Strategy, decay: float, layout: Layout, ema: dict[str, torch.Tensor]) -> None:
        super().__init__(inner)
        self.decay, self.layout, self.ema = decay, layout, ema
        self.current: ArrayRecord | None = None

    def configure_train(self, server_round, arrays, config, grid):
        self.current = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            arrays = ArrayRecord({key: Array(value.numpy().astype(np.float32)) for key, value in arrays.items()})
        weights = unpack(arrays if arrays is not None else self.current, self.layout)
        d = ema_decay(server_round, self.decay)
        self.ema = {k: d * self.ema[k] + (1 - d) * w if w.is_floating_point() else w for k, w in weights.items()}
        return arrays, metrics


class KeepFrozen(Wrapper):
    """The parameters a fine-tuning run does not train leave every round exactly as they entered it. The sites
    never change them, but what the server adds to the whole vector would: central DP's noise above all. Putting
    the known values back is post-processing of the release: it costs no privacy and keeps the frozen part public.
    ``trained``: the packed vector's trained entries (RunSpec.trained_mask)."""

    def __init__(self, inner: Strategy, trained: np.ndarray) -> None:
        super().__init__(inner)
        self.trained = trained
        self.current: np.ndarray | None = None

    def configure_train(self, server_round, arrays, config, grid):
        self.current = packed_vector(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None and self.current is not None:
            vector = arrays[PACKED_KEY].numpy().astype(np.float32)  # server optimizers give float64
            vector[~self.trained] = self.current[~self.trained]
            arrays = pack_vector(vector)
        return arrays, metrics


def is_secure_mean(reply: Message) -> bool:
    """A reply that carries the SecAgg+ mean (made by the server), not a site's own update or error."""
    return not reply.has_error() and reply.has_content() and "metrics" in reply.content.metric_records \
        and SECURE_MEAN in reply.content["metrics"]


def find(strategy: Strategy, kind: type) -> Strategy | None:
    """The wrapper of ``kind`` in the chain, or the inner strategy of that type; None when there is none."""
    while strategy is not None:
        if isinstance(strategy, kind):
            return strategy
        strategy = getattr(strategy, "inner", None)
    return None
