"""The one trainer: what a site runs on its own data, alone (``meddiff train``) or inside a federated round.

It owns the training state that every way of training shares: the seeded model, its schedule and loss, AdamW with
a short linear warm-up, the EMA of the weights, the random generator and the step count. How a step is taken is
pluggable: the plain step (plain_step.py: random batches, gradient clipping, an optional FedProx term) or
DP-SGD (privacy/dp_sgd.py: Poisson batches, per-example clipping and noise). Checkpoints restore everything
needed to continue bit-for-bit on the same device: weights, EMA, optimizer, LR schedule, step, random state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from ..checkpoint import save_checkpoint
from ..config import ConfigError
from ..diffusion.fast_paths import apply_layout, switch_on
from ..diffusion.loading import latent_of, latent_record, model_meta, open_model_checkpoint
from ..latent.autoencoder import AutoencoderFile
from ..diffusion.denoiser import Denoiser
from ..diffusion.loss import LossConfig
from ..diffusion.model import ConditionalDenoiser
from ..diffusion.schedules import make_schedule
from ..schema import ChannelSchema
from ..specs import ModelSpec, RecipeSpec, RuntimeSpec
from .ema import ema_update
from .trainable import select_trained

log = logging.getLogger(__name__)

DEFAULT_STEPS = 1500  # `meddiff train`: the small model learns the phantom in this many steps on a 2-core CPU


@dataclass(frozen=True)
class TrainResult:
    """Scalar summary of one call of :meth:`Trainer.train` (what a site may send to the server)."""

    steps: int
    examples: int
    loss: float
    seconds: float
    images_per_second: float
    skipped_nonfinite: int


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite: the message says at which step and what to change."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_divisible(spatial: tuple[int, ...], spec: ModelSpec, *, latent: bool = False) -> None:
    """Each level of the UNet halves the grid and the decoder doubles it back, so every side must divide by
    2 ** (levels - 1); anything else fails deep inside the network, so it is refused here with the sizes."""
    factor = 2 ** (len(spec.channels) - 1)
    if any(size % factor for size in spatial):
        what = "latents" if latent else "images"
        raise ConfigError(f"{what} of {' x '.join(map(str, spatial))} do not divide by {factor}, which the network "
                         f"({len(spec.channels)} levels) needs on every side: set [data] resolution (and depth, for "
                         f"volumes) to multiples of {factor}" + (" times the autoencoder's factor" if latent else ""))


class Trainer:
    """The model, its EMA and the optimizer of one site; ``train`` runs steps of the plain kind, a DP step takes
    over the same state (privacy/dp_sgd.py).

    steps: the planned total (``train()`` without a count runs up to it); ema: keep the EMA (a federated round
    sends raw weights and skips it); fused: fused AdamW (Opacus wraps only the plain one).
    """

    def __init__(self, schema: ChannelSchema, model: ModelSpec = ModelSpec(), recipe: RecipeSpec = RecipeSpec(),
                 runtime: RuntimeSpec = RuntimeSpec(), device: str | torch.device | None = None, *,
                 steps: int = DEFAULT_STEPS, ema: bool = True, fused: bool = True,
                 latent: AutoencoderFile | None = None) -> None:
        self.schema, self.spec, self.recipe, self.runtime, self.steps = schema, model, recipe, runtime, steps
        self.latent = latent  # a latent model: the stage-1 autoencoder its data was encoded with, saved with it
        self.device = torch.device(device) if device else default_device()
        with torch.random.fork_rng(devices=[]):  # the same seed gives the same initial model, no global state
            torch.manual_seed(recipe.seed)
            self.model = ConditionalDenoiser(schema, model).to(self.device)
        self.channels_last = switch_on(runtime.channels_last, self.device)
        apply_layout(self.model, model.spatial_dims, switch_on(runtime.flash_attention, self.device),
                     self.channels_last)
        self.ema = AveragedModel(self.model, multi_avg_fn=ema_update(recipe.ema_decay), use_buffers=True) \
            if ema else None
        self.trained = select_trained(self.model, recipe.trainable)  # frozen parameters get no gradient
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                           lr=recipe.learning_rate,
                                           weight_decay=recipe.weight_decay, fused=fused)
        warmup = max(1, recipe.warmup_steps)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.schedule = make_schedule(model.schedule)
        self.denoiser = Denoiser(self.model, self.schedule)  # loss and sampling through the one denoiser
        self.loss_config = LossConfig(recipe.p_condition, recipe.p_uncond, model.noise)
        # simplex noise is drawn on the CPU (simplex.py); everything else where the model trains
        rng_on = self.device if model.noise == "gaussian" else torch.device("cpu")
        self.generator = torch.Generator(rng_on).manual_seed(recipe.seed)
        self.step = 0
        self.resolution = 0  # recorded from the first data trained on; tasks resize their inputs to it
        self.depth = 0  # likewise a 3D model's slices, where they differ from the resolution (anisotropic volumes)
        self.autocast = self.device.type == "cuda" and runtime.precision in ("auto", "bf16")
        self.anchor: list[torch.Tensor] | None = None  # the global weights of this round (FedProx)
        self.compiled = None  # the compiled network, made once when a call asks for it (plain_step.py)
        self.parallel = None  # the network under DDP, made once in data-parallel training (distributed.py)

    def train(self, data, steps: int | None = None, *, proximal_mu: float = 0.0, progress: bool = False,
              checkpoint_path: str | Path | None = None, checkpoint_meta: dict | None = None) -> TrainResult:
        """Run ``steps`` plain optimizer steps (default: up to ``self.steps`` in total) on ``data``; see
        plain_step.py. proximal_mu: FedProx's mu / 2 ||w - w_global||^2 around the last loaded weights."""
        from .plain_step import PlainStep

        if data.schema.channels != self.schema.channels:
            raise ValueError(f"data channels {list(data.schema.channels)} differ from the model's "
                             f"{list(self.schema.channels)}")
        check_divisible(data.spatial, self.spec, latent=self.latent is not None)
        steps = max(0, self.steps - self.step) if steps is None else steps
        if not self.resolution:
            self.resolution = data.spatial[-1]
            self.depth = data.depth
        run = PlainStep(self, proximal_mu, checkpoint_path, checkpoint_meta)
        return run.train(data, steps, progress)

    # -- weights (what federation exchanges) ---------------------------------------------------------------

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def ema_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in (self.ema.module if self.ema else self.model).state_dict().items()}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Load (global) weights into the model and its EMA; strict, so a model of another shape is refused
        with the offending keys."""
        self.model.load_state_dict(weights, strict=True)
        self.anchor = [p.detach().clone() for p in self.model.parameters()]  # FedProx pulls towards these
        if self.ema is not None:
            self.ema.module.load_state_dict(weights, strict=True)

    # -- checkpoints ------------------------------------------------------------------------------------------

    def save(self, path: str | Path, extra_meta: dict | None = None) -> Path:
        state = {"model": self.weights(), "ema": self.ema_weights(),
                 "ema_count": self.ema.n_averaged.detach().cpu() if self.ema else torch.zeros((), dtype=torch.long),
                 "optimizer": self.optimizer.state_dict(), "lr_schedule": self.lr_schedule.state_dict(),
                 "generator": self.generator.get_state(), "step": self.step}
        meta = model_meta(self.schema, self.spec, self.recipe, self.resolution, step=self.step, steps=self.steps,
                          **({"depth": self.depth} if self.depth else {}), **(extra_meta or {}))
        if self.latent is not None:  # the model file is whole: a site decodes its samples with what it carries
            state["autoencoder"], meta["latent"] = self.latent.weights, latent_record(self.latent)
        return save_checkpoint(path, state, meta)

    @classmethod
    def resume(cls, path: str | Path, device: str | torch.device | None = None, *, steps: int | None = None,
               runtime: RuntimeSpec = RuntimeSpec()) -> "Trainer":
        """A trainer in exactly the state of checkpoint ``path``; ``steps`` may change the planned total."""
        state, meta, schema, spec, recipe = open_model_checkpoint(path)
        planned = meta.get("steps", meta.get("train_config", {}).get("steps", DEFAULT_STEPS))  # older files
        latent = latent_of(state, meta, str(path))
        trainer = cls(schema, spec, recipe, runtime, device, steps=steps or int(planned), latent=latent)
        trainer.model.load_state_dict(state["model"])
        trainer.ema.module.load_state_dict(state["ema"])
        trainer.ema.n_averaged.copy_(state["ema_count"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.lr_schedule.load_state_dict(state["lr_schedule"])
        try:
            trainer.generator.set_state(state["generator"])
        except RuntimeError:  # saved by a trainer on another kind of device: its random stream cannot continue
            log.warning("%s was saved on another kind of device; the random stream restarts from seed %d",
                        path, recipe.seed)
        trainer.step = int(state["step"])
        trainer.resolution, trainer.depth = int(meta.get("resolution", 0)), int(meta.get("depth", 0))
        return trainer
