"""DP-SGD at a site, per patient or per example: Opacus on the conditional denoiser, with DPDM's noise multiplicity.

- The unit (``units.py``): each patient as a whole where the data names its patients (the default), else each
  example. Patient-level: all of a sampled patient's slices in a step give one contribution, the mean of their
  per-example gradients, which Opacus clips to C as one row.
- Poisson sampling (Opacus ``DPDataLoader``): each unit joins each step with probability q = 1 / ceil(N / B) for
  N units and B expected units per step.
- Per-example gradients: Opacus hooks or functorch (any K), or ghost clipping (K = 1), which computes each
  example's gradient norm from activations and output gradients and then back-propagates the clipped-weighted
  loss: two backward passes, no (B, *param) tensors, the GPU fast path (benchmarks/gpu.py).
- Noise multiplicity (Dockhorn et al., DPDM): each example's loss is the mean over K independent (t, noise)
  draws, averaged *before* its gradient is clipped, so K lowers the variance of the clipped gradient at no
  privacy cost (clipping and noise still see one gradient per example).
- Per-example clipping to ``max_grad_norm`` and Gaussian noise of ``noise_multiplier * max_grad_norm`` on the sum,
  by Opacus's ``DPOptimizer``; an empty Poisson batch still takes a noisy step, as the analysis assumes.
- Several devices at the site (common/training/distributed.py): Opacus' distributed path (DPDDP and its
  distributed optimizer): each rank Poisson-samples its share of the units with the same q (its own random
  stream), clips per unit; rank 0 alone adds the noise, and the ranks' sums are added: one process's step.
- The accountant is seeded with the site's earlier releases (from the ledger), so the epsilon it reports after
  this round is the site's total, as one long-lived PrivacyEngine would report it.

Protected: any single patient of this site (patient-level), or any single example (example-level, where the data
names no patients or the site chose it), against anyone who sees the weights the site sends (the coordinator,
other sites, whoever gets the global model). Not protected: at example level, a patient with many images is
protected per image only; patient ids the data gets wrong (two ids for one person) split a person's protection;
the site's data distribution as a whole (that is site-level DP at the server). Noise comes from torch's default
generator, not a cryptographically secure one (Opacus ``secure_mode`` needs torchcsprng).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP
from torch.utils.data import DataLoader, TensorDataset

from ..common.config import PrivacyConfig
from ..common.data.tensors import TrainingTensors
from ..common.diffusion.denoiser import Denoiser
from ..common.diffusion.loss import LossConfig
from ..common.schema import ChannelSchema
from ..common.specs import ModelSpec, RecipeSpec, RuntimeSpec
from ..common.training.distributed import current_ranks
from ..common.training.trainer import Trainer
from .accounting import Release
from .units import PrivacyUnits, gather_patients, per_patient, privacy_units

log = logging.getLogger(__name__)

OPACUS_MODES = {"hooks": "hooks", "functorch": "functorch", "ghost": "ghost"}


class PerExampleCriterion(torch.nn.Module):
    """The diffusion loss as an Opacus criterion: (B,) per-example losses when ``reduction`` is "none" (ghost
    clipping's first pass), their mean otherwise. ``network`` is the Opacus-wrapped model after ``make_private``;
    both are plain attributes (not child modules: Opacus must not wrap the model twice)."""

    def __init__(self, denoiser: Denoiser, loss_config: LossConfig, generator) -> None:
        super().__init__()
        self.reduction = "mean"
        self.loss_config, self.generator = loss_config, generator
        object.__setattr__(self, "denoiser", denoiser)
        object.__setattr__(self, "network", None)

    def forward(self, images: torch.Tensor, available: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = self.denoiser.loss(images, available, labels, self.loss_config, self.generator,
                                    network=self.network)
        return losses if self.reduction == "none" else losses.mean()


@dataclass(frozen=True)
class PrivateRoundResult:
    steps: int
    examples: int  # examples seen over all steps (Poisson batch sizes vary)
    loss: float
    seconds: float
    epsilon: float  # the site's total after this round, at ``delta``
    delta: float
    units: PrivacyUnits | None = None  # who epsilon protects (patients or examples)


def private_trainer(schema: ChannelSchema, model: ModelSpec, recipe: RecipeSpec, privacy: PrivacyConfig,
                    data: TrainingTensors, noise_multiplier: float, history: list[Release] = (),
                    device: str | torch.device | None = None, runtime: RuntimeSpec = RuntimeSpec()) -> "DPStep":
    """The one trainer (no EMA, plain AdamW for Opacus to wrap) with the DP-SGD step taking over its state."""
    trainer = Trainer(schema, model, recipe, runtime, device, ema=False, fused=False)
    return DPStep(trainer, privacy, data, noise_multiplier, history)


class DPStep:
    """DP-SGD on a trainer's model and optimizer. ``history`` holds the site's earlier releases (see ``ledger``).

    The trainer's generator moves to the CPU (Poisson sampling and the DP noise draw from torch's generator, the
    per-example draws from it), and bf16 is used only when asked for: Opacus' per-example gradients are checked in
    fp32 (benchmarks/gpu.py measures bf16)."""

    def __init__(self, trainer: Trainer, privacy: PrivacyConfig, data: TrainingTensors, noise_multiplier: float,
                 history: list[Release] = ()) -> None:
        if privacy.grad_sample_mode not in OPACUS_MODES:
            raise ValueError(f"grad_sample_mode {privacy.grad_sample_mode!r} is not supported for training; "
                             f"use one of {sorted(OPACUS_MODES)}")
        self.trainer, self.privacy, self.noise_multiplier = trainer, privacy, noise_multiplier
        self.units = privacy_units(data, privacy, trainer.recipe.batch_size)
        self.examples, self.delta = len(data), privacy.delta_for(self.units.count)
        self.ranks = current_ranks()
        self.seed = trainer.recipe.seed + (self.ranks.rank if self.ranks else 0)  # each rank its own draws
        trainer.generator = torch.Generator().manual_seed(self.seed)
        self.autocast = trainer.runtime.precision == "bf16" and trainer.device.type == "cuda"
        self.ghost = privacy.grad_sample_mode == "ghost"
        if self.ghost and privacy.noise_multiplicity != 1:
            raise ValueError("ghost clipping needs noise_multiplicity = 1")
        if self.ghost and self.ranks is not None:
            raise ValueError("[privacy] grad_sample_mode = \"ghost\" is not supported on several devices: use "
                             "\"hooks\" (or one device)")
        if self.ghost and self.units.grouped:
            raise ValueError("[privacy] grad_sample_mode = \"ghost\" clips single examples, not a patient's slices "
                             "together: use \"hooks\" for patient-level DP, or set [privacy] unit = \"example\"")
        self.data = data.to(trainer.device)
        self._make_private(self.data, history)

    def _make_private(self, data: TrainingTensors, history: list[Release]) -> None:
        t = self.trainer
        if self.units.grouped:  # Opacus samples patients; their slices are gathered at each step
            loader = DataLoader(TensorDataset(torch.arange(self.units.count)), batch_size=self.units.per_step)
        else:
            loader = DataLoader(TensorDataset(data.images, data.available, data.labels),
                                batch_size=t.recipe.batch_size)
        self.engine = PrivacyEngine(accountant=self.privacy.accountant)
        self.engine.accountant.history = list(history)
        criterion = PerExampleCriterion(t.denoiser, t.loss_config, t.generator)  # ghost only
        module = DPDDP(t.model) if self.ranks is not None else t.model  # Opacus then reduces, noise once
        private = self.engine.make_private(
            module=module, optimizer=t.optimizer, data_loader=loader, noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.privacy.max_grad_norm, poisson_sampling=True, criterion=criterion,
            grad_sample_mode=OPACUS_MODES[self.privacy.grad_sample_mode])
        if self.ghost:  # Opacus wraps the criterion; the wrapper runs both backward passes
            self.private_model, self.optimizer, self.criterion, self.loader = private
            object.__setattr__(criterion, "network", self.private_model)
        else:
            self.private_model, self.optimizer, self.loader = private
        self.sample_rate = float(self.loader.sample_rate)
        assert math.isclose(self.sample_rate, self.units.sample_rate)

    # the trainer's state, as the step uses it
    model = property(lambda self: self.trainer.model)
    device = property(lambda self: self.trainer.device)
    schedule = property(lambda self: self.trainer.schedule)
    denoiser = property(lambda self: self.trainer.denoiser)
    loss_config = property(lambda self: self.trainer.loss_config)
    generator = property(lambda self: self.trainer.generator)

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.trainer.model.load_state_dict(weights, strict=True)

    def weights(self) -> dict[str, torch.Tensor]:
        """The plain model's weights (no Opacus ``_module.`` prefix): what the site sends."""
        return self.trainer.weights()

    def per_example_gradients(self, images: torch.Tensor, available: torch.Tensor, labels: torch.Tensor,
                              owners: torch.Tensor | None = None, patients: int = 0) -> torch.Tensor:
        """Forward and backward one batch; leaves each parameter's ``grad_sample`` as (B, *shape), the gradient
        of each example's K-draw mean loss (before clipping), or with ``owners`` (B,) as (patients, *shape), the
        mean of each patient's rows: what Opacus then clips, one row per unit. Returns the (B,) losses."""
        batch, k = images.shape[0], self.privacy.noise_multiplicity
        self.optimizer.zero_grad(set_to_none=True)
        if batch == 0:  # an empty Poisson batch: nothing to clip, the optimizer still adds noise
            for p in self.model.parameters():
                if p.requires_grad:
                    if self.ghost:
                        p.grad = torch.zeros_like(p)
                    else:
                        p.grad_sample = torch.zeros((0,) + tuple(p.shape), device=p.device, dtype=p.dtype)
            return torch.zeros(0)
        if self.ghost:  # the criterion wrapper runs both backward passes and leaves the clipped sum in p.grad
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss = self.criterion(images, available, labels)
            loss.backward()
            return loss.loss_per_sample.detach().float()
        repeated = [x.repeat_interleave(k, dim=0) for x in (images, available, labels)]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            losses = self.trainer.denoiser.loss(*repeated, self.loss_config, self.generator,
                                                network=self.private_model)
        losses.mean().backward()
        for p in self.model.parameters():
            if p.requires_grad and (k > 1 or owners is not None):
                grad_sample = self.optimizer._get_flat_grad_sample(p).view(batch, k, *p.shape).mean(dim=1)
                p.grad_sample = grad_sample if owners is None else per_patient(grad_sample, owners, patients)
        return losses.detach().view(batch, k).mean(dim=1)

    def _batches(self):
        """(images, available, labels, owners, patients) per Poisson batch; owners None at example level."""
        for batch in self.loader:
            if not self.units.grouped:
                yield (*batch, None, 0)
                continue
            rows, owners = gather_patients(self.units, batch[0].cpu(), self.generator)
            part = self.data.subset(rows.to(self.data.images.device))
            yield part.images, part.available, part.labels, owners, len(batch[0])

    def train(self, steps: int) -> PrivateRoundResult:
        """``steps`` noisy steps on Poisson batches; the accountant records each."""
        self.private_model.train()
        losses, seen, done = [], 0, 0
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)  # Poisson sampling and the DP noise use torch's generator
            while done < steps:
                for images, available, labels, owners, patients in self._batches():
                    batch_losses = self.per_example_gradients(images, available, labels, owners, patients)
                    self.optimizer.step()
                    self.trainer.lr_schedule.step()
                    self.trainer.step += 1
                    losses.extend(batch_losses.tolist())
                    seen += len(batch_losses)
                    done += 1
                    if done == steps:
                        break
        seconds = time.perf_counter() - start
        epsilon = float(self.engine.accountant.get_epsilon(self.delta))
        return PrivateRoundResult(done, seen, float(sum(losses) / max(1, len(losses))), seconds, epsilon, self.delta,
                                  self.units)
