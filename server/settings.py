"""What the coordinator configures for a federated run (the ``[federation]`` table of federation.toml or of a
simulation scenario). Frozen; unknown keys and bad values are refused by name."""

from __future__ import annotations

from dataclasses import dataclass

from ..common.config import ConfigError
from ..common.latent.stage import STAGES
from ..common.messages import TrainInstruction

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedmedian", "fedtrimmedavg", "krum")
CENTRAL_DP = ("off", "server-clipping", "client-clipping")
# Flower's accountant for the fixed-clipping wrappers requires FedAvg's own (uniform-weight) aggregation
CENTRAL_DP_STRATEGIES = ("fedavg", "fedprox")
# SecAgg+ gives the server only the mean of the updates: robust aggregators (median, trimmed mean, Krum) need each
SECURE_STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")


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
    # stop when the sites' mean held-out loss has not improved for this many evaluations (0 = run all rounds);
    # the best round's model is then the run's model (registered last and delivered)
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0  # an improvement must lower the loss by more than this fraction
    seed: int = 0
    initial_model: str = ""  # a model file to start round 1 from (server/initial_model.py); "" = from scratch
    # latent diffusion, stage 2: train on the latents of this autoencoder.pt (`meddiff train-autoencoder`); every
    # message carries the file, and a site accepts it only by its SHA-256 ("" = a pixel-space run)
    autoencoder: str = ""
    # "denoiser" (the one model; on latents when `autoencoder` names a file), "autoencoder" (stage 1 only, the
    # [autoencoder] table) or "both" (stage 1, then the denoiser on its latents: server/stages.py)
    stage: str = "denoiser"
    # Model delivery (server/delivery.py): every participating site receives the global model and its EMA
    deliver_final: bool = True  # after the last round
    deliver_every: int = 0  # and every this many rounds (0 = only the final model)
    # Site-level (central) DP at the server (server/central_dp.py): each round's mean of updates clipped to
    # dp_clipping_norm plus Gaussian noise; Flower's RDP accountant composes the rounds.
    central_dp: str = "off"
    dp_noise_multiplier: float = 1.0
    dp_clipping_norm: float = 1.0  # L2 bound on one site's update ||w_site - w_global|| per round
    dp_delta: float = 1e-5
    dp_max_epsilon: float = 0.0  # stop the run before the round that would pass it (0 = no limit)
    dp_population: int = 0  # sites in the consortium (0 = min_sites); sampled sites per round cannot exceed it
    # SecAgg+ (server/secure_round.py): the server learns only the mean of the sites' weights
    secure_aggregation: bool = False
    secagg_shares: float = 1.0  # each site's key is shared with this fraction of the round's sites
    secagg_threshold: float = 0.67  # fraction of the shares needed to unmask: tolerates the rest dropping out
    secagg_clipping_range: float = 8.0  # weights are quantised within +-this (a site refuses if it would clip)
    secagg_max_weight: float = 10000.0  # largest num-examples of a site (FedAvg weighting under SecAgg+)
    # Experiment tracking (server/tracking.py): "mlflow" logs the run to MLflow and TensorBoard; "off" does not
    tracking: str = "mlflow"
    tracking_uri: str = ""  # "" = a local store in the run directory (RUN_DIR/mlflow.db); or an MLflow server

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"[federation] strategy = {self.strategy!r} is not one of {list(STRATEGIES)}")
        if self.deliver_every < 0:
            raise ConfigError("[federation] deliver_every must be >= 0 (0 = deliver only the final model)")
        if min(self.rounds, self.local_steps, self.min_sites, self.evaluate_every) < 1:
            raise ConfigError("[federation] rounds, local_steps, min_sites and evaluate_every must be >= 1")
        if self.early_stopping_patience < 0 or not 0 <= self.early_stopping_min_delta < 1:
            raise ConfigError("[federation] early_stopping_patience must be >= 0 (0 = run all rounds) and "
                              "early_stopping_min_delta in [0, 1)")
        if self.early_stopping_patience and not self.evaluate:
            raise ConfigError("[federation] early_stopping_patience needs the sites' held-out loss: "
                              "set evaluate = true")
        if not 0 < self.fraction_train <= 1:
            raise ConfigError(f"[federation] fraction_train must be in (0, 1], got {self.fraction_train}")
        if self.max_norm_ratio <= 1:
            raise ConfigError(f"[federation] max_norm_ratio must be > 1, got {self.max_norm_ratio}")
        if not 0 <= self.server_ema_decay < 1:
            raise ConfigError(f"[federation] server_ema_decay must be in [0, 1), got {self.server_ema_decay}")
        if self.tracking not in ("mlflow", "off"):
            raise ConfigError(f"[federation] tracking = {self.tracking!r} is not one of ['mlflow', 'off']")
        if self.stage not in STAGES:
            raise ConfigError(f"[federation] stage = {self.stage!r} is not one of {list(STAGES)}")
        if self.stage != "denoiser" and (self.autoencoder or self.initial_model):
            raise ConfigError(f"[federation] stage = {self.stage!r} trains the autoencoder: name no autoencoder or "
                              "initial_model file (or set stage = \"denoiser\" to train on a stored autoencoder)")
        if self.central_dp not in CENTRAL_DP:
            raise ConfigError(f"[federation] central_dp = {self.central_dp!r} is not one of {list(CENTRAL_DP)}")
        if self.central_dp != "off":
            if self.strategy not in CENTRAL_DP_STRATEGIES:
                raise ConfigError(f"[federation] central_dp needs strategy = one of {list(CENTRAL_DP_STRATEGIES)} "
                                  f"(uniform FedAvg aggregation is what Flower's accountant covers), got {self.strategy!r}")
            if self.dp_noise_multiplier <= 0 or self.dp_clipping_norm <= 0 or not 0 < self.dp_delta < 1:
                raise ConfigError("[federation] central DP needs dp_noise_multiplier > 0, dp_clipping_norm > 0 and "
                                  "0 < dp_delta < 1")
            if self.fraction_train != 1:
                raise ConfigError("[federation] central DP is accounted without sampling amplification: keep "
                                  "fraction_train = 1")

        if self.secure_aggregation:
            if self.strategy not in SECURE_STRATEGIES:
                raise ConfigError(f"[federation] secure_aggregation needs a strategy that works on the mean of the "
                                  f"updates, one of {list(SECURE_STRATEGIES)}; got {self.strategy!r}")
            if self.central_dp == "server-clipping":
                raise ConfigError("[federation] with secure_aggregation the server never sees one site's update, so "
                                  "it cannot clip it: use central_dp = 'client-clipping'")
            if not 0 < self.secagg_threshold <= 1 or not 0 < self.secagg_shares <= 1:
                raise ConfigError("[federation] secagg_shares and secagg_threshold are fractions in (0, 1]")

    @property
    def population(self) -> int:
        return self.dp_population or self.min_sites

    def delivers_after(self, server_round: int) -> bool:
        final = server_round == self.rounds and self.deliver_final
        return final or (self.deliver_every > 0 and server_round % self.deliver_every == 0)

    def instruction(self, server_round: int) -> TrainInstruction:
        """What each site is asked to do in this round (FedProx's mu only for FedProx)."""
        return TrainInstruction(server_round, self.rounds, self.local_steps,
                                self.proximal_mu if self.strategy == "fedprox" else 0.0)

    def evaluates_after(self, server_round: int) -> bool:
        return self.evaluate and (server_round % self.evaluate_every == 0 or server_round == self.rounds)
