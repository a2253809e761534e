"""What the coordinator configures for a federated run (the ``[federation]`` table of federation.toml or of a
simulation scenario). Frozen; unknown keys and bad values are refused by name."""

from __future__ import annotations

from dataclasses import dataclass

from ..common.config import ConfigError

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedmedian", "fedtrimmedavg", "krum")


@dataclass(frozen=True)
class FederationSettings:
    rounds: int = 5
    local_steps: int = 50
    strategy: str = "fedavg"
    fraction_train: float = 1.0
    min_sites: int = 2  # a round needs at least this many sites (sampled, replying and accepted)
    timeout: float = 3600.0  # seconds to wait for the replies of one round
    max_norm_ratio: float = 10.0  # reject an update whose norm exceeds this multiple of the others' median
    server_ema_decay: float = 0.9  # EMA of the global model over rounds
    proximal_mu: float = 0.01  # FedProx
    server_learning_rate: float = 0.001  # FedAdam / FedYogi eta: each weight moves up to about this much per round
    trimmed_beta: float = 0.2  # FedTrimmedAvg
    krum_malicious: int = 0
    evaluate: bool = True  # ask sites for their held-out denoising loss ...
    evaluate_every: int = 1  # ... every this many rounds and after the last (each ask is one more message a site)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"[federation] strategy = {self.strategy!r} is not one of {list(STRATEGIES)}")
        if min(self.rounds, self.local_steps, self.min_sites, self.evaluate_every) < 1:
            raise ConfigError("[federation] rounds, local_steps, min_sites and evaluate_every must be >= 1")
        if not 0 < self.fraction_train <= 1:
            raise ConfigError(f"[federation] fraction_train must be in (0, 1], got {self.fraction_train}")
        if self.max_norm_ratio <= 1:
            raise ConfigError(f"[federation] max_norm_ratio must be > 1, got {self.max_norm_ratio}")
        if not 0 <= self.server_ema_decay < 1:
            raise ConfigError(f"[federation] server_ema_decay must be in [0, 1), got {self.server_ema_decay}")

    def evaluates_after(self, server_round: int) -> bool:
        return self.evaluate and (server_round % self.evaluate_every == 0 or server_round == self.rounds)
