"""Early stopping: train until the held-out denoising loss stops improving, and keep the best model.

A model trained for a fixed step count is limited by steps, not by data; stopped on a plateau of held-out loss,
each model (a site alone, the sites pooled, a federation) gets what its data can give, which is what a comparison
of them must show. The loss is measured on the EMA weights (the model that is delivered and sampled) with the
same noise draws every time (held_out.py), so an improvement is the model's, not the draw's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..data.tensors import TrainingTensors
from ..diffusion.denoiser import Denoiser
from ..diffusion.held_out import held_out_loss
from .trainer import Trainer, TrainResult


@dataclass
class Plateau:
    """patience: evaluations without an improvement of more than ``min_delta`` (relative) before stopping."""

    patience: int
    min_delta: float = 0.0
    history: list[tuple[int, float]] = field(default_factory=list)  # (step or round, held-out loss)
    best: tuple[int, float] | None = None

    def observe(self, at: int, loss: float) -> bool:
        """Record one evaluation; True when it is the best so far."""
        self.history.append((at, loss))
        if math.isfinite(loss) and (self.best is None or loss < self.best[1] * (1 - self.min_delta)):
            self.best = (at, loss)
            return True
        return False

    @property
    def since_best(self) -> int:
        """Evaluations since the best one (all of them when none was finite)."""
        if self.best is None:
            return len(self.history)
        return len(self.history) - 1 - [at for at, _ in self.history].index(self.best[0])

    @property
    def stopped(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def record(self) -> dict:
        """What train.json / the run's registry say about it."""
        return {**asdict(self), "best_at": self.best[0] if self.best else None,
                "best_loss": self.best[1] if self.best else None, "stopped": self.stopped}


def ema_held_out_loss(trainer: Trainer, holdout: TrainingTensors) -> float:
    """The held-out loss of the trainer's EMA weights (its raw weights when it keeps no EMA)."""
    network = trainer.ema.module if trainer.ema is not None else trainer.model
    was_training = network.training
    try:
        with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=trainer.autocast):
            loss = held_out_loss(Denoiser(network, trainer.schedule), holdout, trainer.spec.noise,
                                 seed=trainer.recipe.seed, device=trainer.device)["eval-loss"]
    finally:
        network.train(was_training)
    return loss


def train_until_plateau(trainer: Trainer, data: TrainingTensors, holdout: TrainingTensors, plateau: Plateau,
                        every: int, checkpoint: Path, meta: dict,
                        say: Callable[[str], None] = lambda line: None) -> TrainResult:
    """Train in chunks of ``every`` steps up to ``trainer.steps``, evaluating after each; ``checkpoint`` holds the
    trainer at its best evaluation (so a resumed run continues from the best, with a fresh patience). Returns the
    summed result of the steps taken."""
    if len(holdout) == 0:
        raise ValueError("early stopping needs held-out examples; the data has none to keep out")
    if trainer.step >= trainer.steps:
        raise ValueError(f"the model is at step {trainer.step} of {trainer.steps}: nothing to train (raise --steps)")
    results: list[TrainResult] = []
    while trainer.step < trainer.steps and not plateau.stopped:
        results.append(trainer.train(data, min(every, trainer.steps - trainer.step)))
        loss = ema_held_out_loss(trainer, holdout)
        improved = plateau.observe(trainer.step, loss)
        if improved:
            trainer.save(checkpoint, {**meta, "early_stopping": plateau.record()})
        say(f"step {trainer.step}: held-out loss {loss:.5f}" + (" (best)" if improved else
            f" (best {plateau.best[1]:.5f} at step {plateau.best[0]}; {plateau.since_best} of {plateau.patience} "
            "without improvement)" if plateau.best else ""))
    if plateau.best is None:
        raise ValueError("the held-out loss was never finite; nothing was saved (lower the learning rate)")
    return combined(results)


def combined(results: list[TrainResult]) -> TrainResult:
    steps = sum(r.steps for r in results)
    examples = sum(r.examples for r in results)
    seconds = sum(r.seconds for r in results)
    loss = sum(r.loss * r.steps for r in results if r.steps) / steps if steps else math.nan
    return TrainResult(steps, examples, loss, seconds, examples / max(seconds, 1e-9),
                       sum(r.skipped_nonfinite for r in results))
