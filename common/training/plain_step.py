"""The plain training step: a random batch, the masked diffusion loss (plus FedProx's term when asked),
gradient clipping, AdamW, the EMA.

On CUDA the step never waits for the GPU: random numbers are drawn on the GPU, the EMA is one foreach update,
a non-finite loss skips the optimizer step on the device (fused AdamW's ``found_inf``, as AMP's GradScaler does)
and is counted there, and the host looks at the count only every ``SYNC_EVERY`` steps. The fast paths of
common/diffusion/fast_paths.py (bf16 autocast, SDPA attention, channels-last, torch.compile) are on by default
on CUDA.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from ..data.tensors import TrainingTensors
from ..diffusion.fast_paths import CompiledWithFallback, memory_format, switch_on
from ..progress import training_progress
from .distributed import Ranks, current_ranks, mean_over_ranks
from .trainer import TrainResult, Trainer, TrainingDiverged

log = logging.getLogger(__name__)

MAX_NONFINITE_IN_A_ROW = 10
SYNC_EVERY = 25  # steps between host looks at the device-side non-finite counters
COMPILE_MIN_STEPS = 200


class NonFiniteCounters:
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
        if longest >= MAX_NONFINITE_IN_A_ROW:
            raise TrainingDiverged(
                f"loss was not finite for {longest} steps in a row (checked at step {step}); lower "
                f"learning_rate (now {learning_rate}) or grad_clip, or check the data")


def compiled_network(trainer: Trainer, steps: int) -> CompiledWithFallback | None:
    """The compiled network when compiling is on and pays off for a call of ``steps`` steps (kept with the
    trainer, compiled once)."""
    setting = trainer.runtime.compile
    wanted = setting == "on" or (switch_on(setting, trainer.device) and steps >= COMPILE_MIN_STEPS)
    if wanted and trainer.compiled is None:
        trainer.compiled = CompiledWithFallback(trainer.model)
    return trainer.compiled if wanted else None


def data_parallel(trainer: Trainer, ranks: Ranks):
    """The trainer's network under DDP (made once; it averages the gradients of the ranks' slices)."""
    if trainer.parallel is None:
        if trainer.runtime.compile == "on":
            log.info("compile is not used with data-parallel training; the network runs eagerly")
        ids = [trainer.device.index] if trainer.device.type == "cuda" else None
        trainer.parallel = torch.nn.parallel.DistributedDataParallel(trainer.model, device_ids=ids)
    return trainer.parallel


def place(trainer: Trainer, data: TrainingTensors) -> TrainingTensors:
    """On the GPU when the set takes at most a quarter of its free memory (no loader, no copies per step);
    otherwise in host memory, each batch copied asynchronously from pinned memory."""
    if trainer.device.type != "cuda":
        return data.to(trainer.device)
    size = sum(t.numel() * t.element_size() for t in (data.images, data.available, data.labels))
    free, _ = torch.cuda.mem_get_info(trainer.device)
    if size <= free // 4:
        return data.to(trainer.device)
    log.info("training set of %.1f GB stays in host memory (GPU has %.1f GB free)", size / 1e9, free / 1e9)
    return data.to("cpu")


class PlainStep:
    """Runs plain steps on a trainer's state; ``proximal_mu`` > 0 adds FedProx's term around its anchor."""

    def __init__(self, trainer: Trainer, proximal_mu: float = 0.0, checkpoint_path: str | Path | None = None,
                 checkpoint_meta: dict | None = None) -> None:
        self.trainer, self.proximal_mu = trainer, proximal_mu
        self.checkpoint_path, self.checkpoint_meta = checkpoint_path, checkpoint_meta
        self.ranks = current_ranks()  # data-parallel (distributed.py): this rank's slice of each batch
        if self.ranks is not None and self.ranks.rank != 0:
            self.checkpoint_path = None  # rank 0 writes the checkpoints

    def batch(self, data: TrainingTensors) -> TrainingTensors:
        t = self.trainer
        size = min(t.recipe.batch_size, len(data))
        indices = torch.randperm(len(data), generator=t.generator, device=t.generator.device)[:size]
        batch = data.subset(indices.to(data.images.device))
        if batch.images.device.type != t.device.type:  # a large set kept in pinned host memory
            batch = TrainingTensors(batch.schema, *(x.pin_memory().to(t.device, non_blocking=True)
                                                    for x in (batch.images, batch.available, batch.labels)))
        if t.channels_last:
            images = batch.images.contiguous(memory_format=memory_format(t.spec.spatial_dims))
            batch = TrainingTensors(batch.schema, images, batch.available, batch.labels)
        return batch

    def loss(self, batch: TrainingTensors, network=None) -> torch.Tensor:
        t = self.trainer
        shard = self.ranks.shard(len(batch)) if self.ranks is not None else None
        with torch.autocast(t.device.type, dtype=torch.bfloat16, enabled=t.autocast):
            losses = t.denoiser.loss(batch.images, batch.available, batch.labels, t.loss_config, t.generator,
                                     network=network, shard=shard)
        loss = losses.float().mean()
        if self.proximal_mu > 0 and t.anchor is not None:
            distance = sum(((p - a) ** 2).sum() for p, a in zip(t.model.parameters(), t.anchor))
            loss = loss + 0.5 * self.proximal_mu * distance
        return loss

    def update(self, loss: torch.Tensor, finite: torch.Tensor) -> None:
        t = self.trainer
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.recipe.grad_clip)
        t.optimizer.found_inf = (~finite).float()  # a non-finite step changes nothing, on the device
        t.optimizer.step()
        t.lr_schedule.step()
        if t.ema is not None:
            t.ema.update_parameters(t.model)
        t.step += 1

    def train(self, data: TrainingTensors, steps: int, progress: bool = False) -> TrainResult:
        """``steps`` steps on ``data`` (images (N, C, *spatial) in [-1, 1], moved to the trainer's device)."""
        t = self.trainer
        data = place(t, data)
        network = data_parallel(t, self.ranks) if self.ranks is not None else compiled_network(t, steps)
        t.model.train()
        counters, loss_sum = NonFiniteCounters(t.device), torch.zeros((), device=t.device)
        start = time.perf_counter()
        with training_progress(steps, enabled=progress) as advance:
            for done in range(1, steps + 1):
                loss = self.loss(self.batch(data), network)
                whole = mean_over_ranks(loss)  # the whole batch's loss: every rank skips (or takes) the same step
                finite = counters.record(whole)
                self.update(loss, finite)
                loss_sum += torch.where(finite, whole.detach(), 0.0)
                advance(whole.detach(), done * t.recipe.batch_size / max(time.perf_counter() - start, 1e-9))
                if done % SYNC_EVERY == 0 or done == steps:
                    counters.check(t.step, t.recipe.learning_rate)
                if self.checkpoint_path and t.step % t.runtime.checkpoint_every == 0:
                    t.save(self.checkpoint_path, self.checkpoint_meta)
        seconds = time.perf_counter() - start
        if self.checkpoint_path:
            t.save(self.checkpoint_path, self.checkpoint_meta)
        trained = steps - counters.skipped
        examples = trained * min(t.recipe.batch_size, len(data))
        mean_loss = float(loss_sum) / trained if trained else math.nan
        return TrainResult(trained, examples, mean_loss, seconds, examples / max(seconds, 1e-9), counters.skipped)
