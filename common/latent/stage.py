"""Stage 1 of a federated latent run: the ``[autoencoder]`` table of federation.toml or of a scenario.

    [federation] stage = "both"         # "denoiser" (default), "autoencoder" (stage 1 only) or "both"
    [autoencoder] widths = [16, 32, 64], latent_channels = 3, rounds = 5, local_steps = 50, learning_rate = 5e-4

The sites train the one shared autoencoder (autoencoder.py) from the coordinator's weights, each on every channel
its examples really have; the coordinator averages like any model. The latent scale is computed from the sites'
latent moments after the last round (a mean and a mean square of their held-out latents, two scalars per site).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError
from .autoencoder import AutoencoderSpec
from .training import AutoencoderRecipe

STAGES = ("denoiser", "autoencoder", "both")


@dataclass(frozen=True)
class AutoencoderStage:
    widths: tuple[int, ...] = AutoencoderSpec.channels
    latent_channels: int = AutoencoderSpec.latent_channels
    num_res_blocks: int = AutoencoderSpec.num_res_blocks
    norm_num_groups: int = AutoencoderSpec.norm_num_groups
    learning_rate: float = AutoencoderRecipe.learning_rate
    batch_size: int = AutoencoderRecipe.batch_size
    ssim_weight: float = AutoencoderRecipe.ssim_weight
    kl_weight: float = AutoencoderRecipe.kl_weight
    rounds: int = 5
    local_steps: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        if min(self.rounds, self.local_steps, self.batch_size) < 1 or self.learning_rate <= 0:
            raise ConfigError("[autoencoder] rounds, local_steps and batch_size must be >= 1 and learning_rate > 0")
        self.network(2)  # bad widths are refused here, by name

    def network(self, spatial_dims: int) -> AutoencoderSpec:
        return AutoencoderSpec(self.widths, self.latent_channels, self.num_res_blocks, self.norm_num_groups,
                               spatial_dims)

    def recipe(self, seed: int) -> AutoencoderRecipe:
        """The recipe of the whole stage: its cosine learning rate spans every round's local steps."""
        return AutoencoderRecipe(self.rounds * self.local_steps, self.batch_size, self.learning_rate,
                                 self.ssim_weight, self.kl_weight, seed)
