"""The local trainer: what a site runs on its own data, alone (``meddiff train``) or inside a federated round.

AdamW with a short linear warm-up, an EMA of the weights (``torch.optim.swa_utils.AveragedModel``), gradient
clipping, bf16 autocast on CUDA, and checkpoints that restore everything needed to continue bit-for-bit on the
same device: weights, EMA, optimizer, LR scheduler, step and random-number state.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from ..common.checkpoint import save_checkpoint
from ..common.data.tensors import TrainingTensors
from ..common.diffusion.loading import model_meta, open_model_checkpoint
from ..common.diffusion.loss import LossConfig, per_example_loss
from ..common.diffusion.simplex import NOISES
from ..common.diffusion.model import ConditionalDenoiser, ModelConfig
from ..common.diffusion.schedules import make_schedule
from ..common.progress import training_progress
from ..common.schema import ChannelSchema

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How a site trains. The defaults train the small model on the phantom in minutes on a 2-core CPU."""

    steps: int = 1500
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    schedule: str = "ddpm"
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    p_condition: float = 0.3
    p_uncond: float = 0.1
    noise: str = "gaussian"  # the diffusion noise: gaussian, or simplex (AnoDDPM anomaly detection, 2D)
    seed: int = 0
    checkpoint_every: int = 250
    proximal_mu: float = 0.0  # FedProx: mu / 2 ||w - w_global||^2 keeps a site near the global model

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        make_schedule(self.schedule)  # raises on an unknown name
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {self.noise!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class TrainResult:
    """Scalar summary of one call of :meth:`LocalTrainer.train` (what a site may send to the server)."""

    steps: int
    examples: int
    loss: float
    seconds: float
    images_per_second: float
    skipped_nonfinite: int


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite: the message says at which step and what to change."""


def _ema_average(decay: float):
    """EMA update with the usual warm-up (decay grows from 0.1 to ``decay``) so short runs are not stuck at init."""
    def average(ema_param: torch.Tensor, param: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return ema_param.lerp(param, 1.0 - d)
    return average


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class LocalTrainer:
    """Owns the model, its EMA and the optimizer for one site; ``train`` runs a number of steps on given tensors."""

    MAX_NONFINITE_IN_A_ROW = 10

    def __init__(self, schema: ChannelSchema, model_config: ModelConfig = ModelConfig(),
                 config: TrainConfig = TrainConfig(), device: str | torch.device | None = None) -> None:
        self.schema, self.model_config, self.config = schema, model_config, config
        self.device = torch.device(device) if device else default_device()
        with torch.random.fork_rng(devices=[]):  # the same seed gives the same initial model, no global state
            torch.manual_seed(config.seed)
            self.model = ConditionalDenoiser(schema, model_config).to(self.device)
        self.ema = AveragedModel(self.model, avg_fn=_ema_average(config.ema_decay), use_buffers=True)
        cuda = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay, fused=cuda or None)
        warmup = max(1, config.warmup_steps)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.schedule = make_schedule(config.schedule)
        self.loss_config = LossConfig(config.p_condition, config.p_uncond, config.noise)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.resolution = 0  # recorded from the first data trained on; tasks resize their inputs to it
        self.autocast = cuda and config.precision in ("auto", "bf16")
        self.anchor: list[torch.Tensor] | None = None  # the global weights of this round (FedProx)

    # -- training ---------------------------------------------------------------------------------------------

    def _batch(self, data: TrainingTensors) -> TrainingTensors:
        size = min(self.config.batch_size, len(data))
        indices = torch.randperm(len(data), generator=self.generator)[:size]
        return data.subset(indices.to(data.images.device))

    def _loss(self, batch: TrainingTensors) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            losses = per_example_loss(self.model, self.schedule, batch.images, batch.available,
                                      batch.labels, self.loss_config, self.generator)
        loss = losses.float().mean()
        if self.config.proximal_mu > 0 and self.anchor is not None:
            distance = sum(((p - a) ** 2).sum() for p, a in zip(self.model.parameters(), self.anchor))
            loss = loss + 0.5 * self.config.proximal_mu * distance
        return loss

    def train(self, data: TrainingTensors, steps: int | None = None, *, progress: bool = False,
              checkpoint_path: str | Path | None = None, checkpoint_meta: dict | None = None) -> TrainResult:
        """Run ``steps`` optimizer steps (default: up to ``config.steps`` in total) on ``data``.

        data: images (N, C, *spatial) in [-1, 1] (moved to the trainer's device here). With ``checkpoint_path``
        a checkpoint is written every ``config.checkpoint_every`` steps and at the end.
        """
        if data.schema.channels != self.schema.channels:
            raise ValueError(f"data channels {list(data.schema.channels)} differ from the model's "
                             f"{list(self.schema.channels)}")
        steps = max(0, self.config.steps - self.step) if steps is None else steps
        self.resolution = self.resolution or data.spatial[-1]
        data = data.to(self.device)
        self.model.train()
        losses, skipped, nonfinite_run = [], 0, 0
        start = time.perf_counter()
        with training_progress(steps, enabled=progress) as advance:
            for _ in range(steps):
                batch = self._batch(data)
                loss = self._loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    skipped, nonfinite_run = skipped + 1, nonfinite_run + 1
                    if nonfinite_run >= self.MAX_NONFINITE_IN_A_ROW:
                        raise TrainingDiverged(
                            f"loss was not finite for {nonfinite_run} steps in a row at step {self.step}; lower "
                            f"learning_rate (now {self.config.learning_rate}) or grad_clip, or check the data")
                    continue
                nonfinite_run = 0
                loss.backward()
                if self.config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                self.optimizer.step()
                self.lr_schedule.step()
                self.ema.update_parameters(self.model)
                self.step += 1
                losses.append(loss.detach())
                seconds = time.perf_counter() - start
                advance(losses[-1], len(losses) * self.config.batch_size / max(seconds, 1e-9))
                if checkpoint_path and self.step % self.config.checkpoint_every == 0:
                    self.save(checkpoint_path, checkpoint_meta)
        seconds = time.perf_counter() - start
        if checkpoint_path:
            self.save(checkpoint_path, checkpoint_meta)
        examples = len(losses) * min(self.config.batch_size, len(data))
        mean_loss = float(torch.stack(losses).mean()) if losses else math.nan
        return TrainResult(len(losses), examples, mean_loss, seconds, examples / max(seconds, 1e-9), skipped)

    # -- weights (what federation exchanges) ---------------------------------------------------------------

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def ema_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Load (global) weights into the model and its EMA; strict, so a model of another shape is refused
        with the offending keys."""
        self.model.load_state_dict(weights, strict=True)
        self.anchor = [p.detach().clone() for p in self.model.parameters()]
        self.ema.module.load_state_dict(weights, strict=True)

    # -- checkpoints ------------------------------------------------------------------------------------------

    def save(self, path: str | Path, extra_meta: dict | None = None) -> Path:
        state = {"model": self.weights(), "ema": self.ema_weights(),
                 "ema_count": self.ema.n_averaged.detach().cpu(),
                 "optimizer": self.optimizer.state_dict(), "lr_schedule": self.lr_schedule.state_dict(),
                 "generator": self.generator.get_state(), "step": self.step}
        meta = model_meta(self.schema, self.model_config, self.config, self.resolution, step=self.step,
                          **(extra_meta or {}))
        return save_checkpoint(path, state, meta)

    @classmethod
    def resume(cls, path: str | Path, device: str | torch.device | None = None,
               config: TrainConfig | None = None) -> "LocalTrainer":
        """A trainer in exactly the state of checkpoint ``path``; ``config`` may change e.g. the total steps."""
        state, meta, schema, model_config = open_model_checkpoint(path)
        saved = TrainConfig.from_dict(meta["train_config"])
        trainer = cls(schema, model_config, config or saved, device)
        trainer.model.load_state_dict(state["model"])
        trainer.ema.module.load_state_dict(state["ema"])
        trainer.ema.n_averaged.copy_(state["ema_count"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.lr_schedule.load_state_dict(state["lr_schedule"])
        trainer.generator.set_state(state["generator"])
        trainer.step = int(state["step"])
        trainer.resolution = int(meta.get("resolution", 0))
        return trainer
