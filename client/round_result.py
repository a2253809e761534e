"""What a site's training round hands back to the ClientApp, wherever it ran: in the ClientApp's own process
(client/local_runner.py) or in the site worker (client/site_worker.py). Torch-free, so the ClientApp stays light."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np


@dataclass
class TrainResult:
    """The new weights as one packed float32 vector (common/wire.py), the scalar metrics that may leave the site,
    and what to call once the reply is built (the DP ledger's release). ``refusal`` is set, and nothing else, when
    the site refused the round before training (its privacy budget, a privacy-unit mismatch)."""

    weights: np.ndarray | None
    metrics: dict
    refusal: str = ""
    released: Callable[[], None] = lambda: None


class RoundRunner(Protocol):
    """Trains or evaluates one round for the site named by the SuperNode's node config."""

    def train(self, config: dict, weights: np.ndarray, node_config: dict, run_id: str) -> TrainResult: ...

    def evaluate(self, config: dict, weights: np.ndarray, node_config: dict) -> dict: ...
