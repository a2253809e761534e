"""`meddiff train` (and a federated round) on several devices of one site: the same trainer in one process per
device (distributed.py), each building it the way the caller would have, rank 0 writing the checkpoints.

The training tensors are handed to the processes once (pickled into the launch's private folder); every rank
holds the whole set, as one process does, and takes its slice of each batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.tensors import TrainingTensors
from ..schema import ChannelSchema
from ..specs import ModelSpec, RecipeSpec, RuntimeSpec
from .distributed import launch
from .trainer import TrainResult, Trainer


@dataclass(frozen=True)
class TrainerBuild:
    """How to make the trainer in each process: fresh from specs, or resumed from a checkpoint."""

    schema: ChannelSchema
    model: ModelSpec
    recipe: RecipeSpec
    runtime: RuntimeSpec
    steps: int
    resume_from: Path | None = None
    ema: bool = True
    fused: bool = True  # fused AdamW (Opacus wraps only the plain one)

    def make(self, device: torch.device) -> Trainer:
        if self.resume_from is not None:
            return Trainer.resume(self.resume_from, device, steps=self.steps, runtime=self.runtime)
        return Trainer(self.schema, self.model, self.recipe, self.runtime, device, steps=self.steps, ema=self.ema,
                       fused=self.fused)


def _train_rank(rank: int, device: torch.device, build: TrainerBuild, data: TrainingTensors, steps: int | None,
                checkpoint: Path | None, meta: dict | None, progress: bool) -> tuple[TrainResult, int] | None:
    trainer = build.make(device)
    result = trainer.train(data, steps, progress=progress and rank == 0, checkpoint_path=checkpoint,
                           checkpoint_meta=meta)
    return (result, trainer.step) if rank == 0 else None


def train_on_devices(devices: list[str], build: TrainerBuild, data: TrainingTensors, steps: int | None = None, *,
                     checkpoint: Path | None = None, meta: dict | None = None,
                     progress: bool = False) -> tuple[TrainResult, int]:
    """Train on ``devices`` (at least 2) as one trainer; returns rank 0's result and the total step count."""
    return launch(devices, _train_rank, build, data, steps, checkpoint, meta, progress)[0]
