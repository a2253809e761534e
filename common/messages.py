"""What the coordinator tells a site, typed, with every key of the message named once.

Flower carries a round's instructions in a ConfigRecord of flat values. The coordinator writes them and each site
reads them through :class:`TrainInstruction` (and the ``RunSpec``, common/run_spec.py), never by bare strings in
two modules. ``server-round`` and ``proximal-mu`` are Flower's own keys (its strategies set them).
"""

from __future__ import annotations

from dataclasses import dataclass

# the run spec (common/run_spec.py)
SCHEMA = "schema"
RESOLUTION = "resolution"
MODEL_SPEC = "model-spec"
RECIPE = "recipe"
DATA_SOURCE = "data-source"
DEPTH = "depth"  # a 3D run of anisotropic volumes: its slices (absent: as many as the resolution)
LATENT = "latent"  # a latent run: its autoencoder's description and SHA-256 (JSON)
STAGE_ONE = "autoencoder-stage"  # a stage-1 run: the autoencoder network and recipe the sites train (JSON)
AUTOENCODER = "autoencoder-file"  # a latent run: the stage-1 file's bytes, in every message (about 1 MB)
# the round
SERVER_ROUND = "server-round"  # Flower's strategies set it
PROXIMAL_MU = "proximal-mu"  # Flower's FedProx sets it
LOCAL_STEPS = "local-steps"
ROUNDS = "rounds"
# which code the coordinator runs (common/app_identity.py)
APP_VERSION = "app-version"
APP_HASH = "app-hash"
INITIAL_MODEL = "initial-model-sha256"  # the SHA-256 of the model round 1 started from ("" = from scratch)
# model delivery (server/delivery.py, client/delivery.py)
DELIVERY = "delivery"
DELIVER_MESSAGE_TYPE = "query.deliver"
# SecAgg+ rounds (server/secure_round.py, client/aggregation_mods.py)
SECURE_WEIGHT = "secagg-weight"  # "uniform" (each site 1) or "examples" (FedAvg's num-examples)
SECURE_MAX_WEIGHT = "secagg-max-weight"
SECURE_CLIPPING_RANGE = "secagg-clipping-range"
# central DP: the uniform weight the server puts on every accepted reply (server/central_dp.py)
UNIFORM_WEIGHT = "site-weight"


@dataclass(frozen=True)
class TrainInstruction:
    """One training round as the coordinator asks for it: which round of how many, how many local steps, and the
    FedProx strength (0 for the other strategies)."""

    server_round: int
    rounds: int
    local_steps: int
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        if self.local_steps < 1 or not 1 <= self.server_round <= self.rounds:
            raise ValueError(f"a training instruction needs local_steps >= 1 and 1 <= round <= rounds, got {self}")

    def to_config(self) -> dict[str, int | float]:
        """The round's config entries (Flower's strategies set server-round, and FedProx proximal-mu, to the same
        values again)."""
        return {SERVER_ROUND: self.server_round, ROUNDS: self.rounds, LOCAL_STEPS: self.local_steps,
                PROXIMAL_MU: self.proximal_mu}

    @classmethod
    def from_config(cls, config) -> "TrainInstruction":
        return cls(int(config[SERVER_ROUND]), int(config[ROUNDS]), int(config[LOCAL_STEPS]),
                   float(config.get(PROXIMAL_MU, 0.0)))
