"""The local trainer: what a site runs on its own data, alone (``meddiff train``) or inside a federated round.

AdamW with a short linear warm-up, an EMA of the weights (``torch.optim.swa_utils.AveragedModel``), gradient
clipping, and checkpoints that restore everything needed to continue bit-for-bit on the same device: weights,
EMA, optimizer, LR scheduler, step and random-number state.

On CUDA the step never waits for the GPU: random numbers are drawn on the GPU, the EMA is one foreach update,
a non-finite loss skips the optimizer step on the device (fused AdamW's ``found_inf``, as AMP's GradScaler does)
and is counted there, and the host looks at the count only every ``SYNC_EVERY`` steps. The fast paths of
fast_paths.py (bf16 autocast, SDPA attention, channels-last, torch.compile) are on by default on CUDA.
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
from ..common.diffusion.fast_paths import CompiledWithFallback, apply_layout, memory_format, switch_on
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
    # GPU fast paths, each "auto" (on for CUDA), "on" or "off"; see common/diffusion/fast_paths.py
    flash_attention: str = "auto"
    channels_last: str = "off"  # measured slower on an H200 for this GroupNorm UNet (benchmarks/gpu.py)
    compile: str = "auto"  # auto: only for calls of at least COMPILE_MIN_STEPS steps (compiling costs ~1 min)

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
        for name in ("flash_attention", "channels_last", "compile"):
            switch_on(getattr(self, name), "cpu")  # raises on a value other than auto/on/off

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
    """EMA update with the usual warm-up (decay grows from 0.1 to ``decay``) so short runs are not stuck at init.

    One foreach update of all tensors, with the decay computed on the device from the count: no host sync."""
    def average(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = num_averaged.to(device=ema_params[0].device, dtype=torch.float32)
        d = torch.clamp((1.0 + n) / (10.0 + n), max=decay)
        delta = torch._foreach_sub(params, ema_params)  # lerp by a device tensor: foreach lerp takes host scalars
        torch._foreach_mul_(delta, 1.0 - d)
        torch._foreach_add_(ema_params, delta)
    return average


class _NonFiniteCounters:
    """Counts non-finite losses on the device (total and longest run) so the step loop need not sync."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), dtype=torch.long, device=device)
        self.run = torch.zeros((), dtype=torch.long, device=device)
        self.longest = torch.zeros((), dtype=torch.long, device=device)
        self.skipped = 0

    def record(self, loss: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(loss.detach())
        self.total += ~finite
        self.run = torch.where(finite, 0, self.run + 1)
        self.longest = torch.maximum(self.longest, self.run)
        return finite

    def check(self, step: int, learning_rate: float) -> None:
        self.skipped, longest = int(self.total), int(self.longest)
        if longest >= LocalTrainer.MAX_NONFINITE_IN_A_ROW:
            raise TrainingDiverged(
                f"loss was not finite for {longest} steps in a row (checked at step {step}); lower "
                f"learning_rate (now {learning_rate}) or grad_clip, or check the data")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class LocalTrainer:
    """Owns the model, its EMA and the optimizer for one site; ``train`` runs a number of steps on given tensors."""

    MAX_NONFINITE_IN_A_ROW = 10
    SYNC_EVERY = 25  # steps between host looks at the device-side non-finite counters
    COMPILE_MIN_STEPS = 200

    def __init__(self, schema: ChannelSchema, model_config: ModelConfig = ModelConfig(),
                 config: TrainConfig = TrainConfig(), device: str | torch.device | None = None) -> None:
        self.schema, self.model_config, self.config = schema, model_config, config
        self.device = torch.device(device) if device else default_device()
        with torch.random.fork_rng(devices=[]):  # the same seed gives the same initial model, no global state
            torch.manual_seed(config.seed)
            self.model = ConditionalDenoiser(schema, model_config).to(self.device)
        self.channels_last = switch_on(config.channels_last, self.device)
        apply_layout(self.model, model_config.spatial_dims, switch_on(config.flash_attention, self.device),
                     self.channels_last)
        self.ema = AveragedModel(self.model, multi_avg_fn=_ema_average(config.ema_decay), use_buffers=True)
        cuda = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay, fused=True)  # found_inf below needs fused
        self.compiled: CompiledWithFallback | None = None
        warmup = max(1, config.warmup_steps)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.schedule = make_schedule(config.schedule)
        self.loss_config = LossConfig(config.p_condition, config.p_uncond, config.noise)
        # simplex noise is drawn on the CPU (simplex.py); everything else where the model trains
        rng_on = self.device if config.noise == "gaussian" else torch.device("cpu")
        self.generator = torch.Generator(rng_on).manual_seed(config.seed)
        self.step = 0
        self.resolution = 0  # recorded from the first data trained on; tasks resize their inputs to it
        self.autocast = cuda and config.precision in ("auto", "bf16")
        self.anchor: list[torch.Tensor] | None = None  # the global weights of this round (FedProx)

    # -- training ---------------------------------------------------------------------------------------------

    def _batch(self, data: TrainingTensors) -> TrainingTensors:
        size = min(self.config.batch_size, len(data))
        indices = torch.randperm(len(data), generator=self.generator, device=self.generator.device)[:size]
        batch = data.subset(indices.to(data.images.device))
        if batch.images.device.type != self.device.type:  # a large set kept in pinned host memory
            batch = TrainingTensors(batch.schema, *(t.pin_memory().to(self.device, non_blocking=True)
                                                    for t in (batch.images, batch.available, batch.labels)))
        if self.channels_last:
            images = batch.images.contiguous(memory_format=memory_format(self.model_config.spatial_dims))
            batch = TrainingTensors(batch.schema, images, batch.available, batch.labels)
        return batch

    def _place(self, data: TrainingTensors) -> TrainingTensors:
        """On the GPU when the set takes at most a quarter of its free memory (no loader, no copies per step);
        otherwise in host memory, each batch copied asynchronously from pinned memory."""
        if self.device.type != "cuda":
            return data.to(self.device)
        size = sum(t.numel() * t.element_size() for t in (data.images, data.available, data.labels))
        free, _ = torch.cuda.mem_get_info(self.device)
        if size <= free // 4:
            return data.to(self.device)
        log.info("training set of %.1f GB stays in host memory (GPU has %.1f GB free)", size / 1e9, free / 1e9)
        return data.to("cpu")

    def _network(self, steps: int):
        """The compiled network when compiling is on and pays off for a call of ``steps`` steps."""
        wanted = self.config.compile == "on" or (
            switch_on(self.config.compile, self.device) and steps >= self.COMPILE_MIN_STEPS)
        if wanted and self.compiled is None:
            self.compiled = CompiledWithFallback(self.model)
        return self.compiled if wanted else None

    def _loss(self, batch: TrainingTensors, network=None) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            losses = per_example_loss(self.model, self.schedule, batch.images, batch.available,
                                      batch.labels, self.loss_config, self.generator, network=network)
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
        data = self._place(data)
        network = self._network(steps)
        self.model.train()
        counters = _NonFiniteCounters(self.device)
        loss_sum = torch.zeros((), device=self.device)
        start = time.perf_counter()
        with training_progress(steps, enabled=progress) as advance:
            for done in range(1, steps + 1):
                loss = self._loss(self._batch(data), network)
                finite = counters.record(loss)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                self.optimizer.found_inf = (~finite).float()  # a non-finite step changes nothing, on the device
                self.optimizer.step()
                self.lr_schedule.step()
                self.ema.update_parameters(self.model)
                self.step += 1
                loss_sum += torch.where(finite, loss.detach(), 0.0)
                advance(loss.detach(), done * self.config.batch_size / max(time.perf_counter() - start, 1e-9))
                if done % self.SYNC_EVERY == 0 or done == steps:
                    counters.check(self.step, self.config.learning_rate)
                if checkpoint_path and self.step % self.config.checkpoint_every == 0:
                    self.save(checkpoint_path, checkpoint_meta)
        seconds = time.perf_counter() - start
        if checkpoint_path:
            self.save(checkpoint_path, checkpoint_meta)
        skipped = counters.skipped
        trained = steps - skipped
        examples = trained * min(self.config.batch_size, len(data))
        mean_loss = float(loss_sum) / trained if trained else math.nan
        return TrainResult(trained, examples, mean_loss, seconds, examples / max(seconds, 1e-9), skipped)

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
        try:
            trainer.generator.set_state(state["generator"])
        except RuntimeError:  # saved by a trainer on another kind of device: its random stream cannot continue
            log.warning("%s was saved on another kind of device; the random stream restarts from seed %d",
                        path, trainer.config.seed)
        trainer.step = int(state["step"])
        trainer.resolution = int(meta.get("resolution", 0))
        return trainer
