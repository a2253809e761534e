"""Sample-level DP-SGD at a site: Opacus on the conditional denoiser, with DPDM's noise multiplicity.

- Poisson sampling (Opacus ``DPDataLoader``): each example joins each step with probability q = 1 / ceil(N / B).
- Per-example gradients: Opacus hooks or functorch (any K), or ghost clipping (K = 1), which computes each
  example's gradient norm from activations and output gradients and then back-propagates the clipped-weighted
  loss: two backward passes, no (B, *param) tensors, the GPU fast path (benchmarks/gpu.py).
- Noise multiplicity (Dockhorn et al., DPDM): each example's loss is the mean over K independent (t, noise)
  draws, averaged *before* its gradient is clipped, so K lowers the variance of the clipped gradient at no
  privacy cost (clipping and noise still see one gradient per example).
- Per-example clipping to ``max_grad_norm`` and Gaussian noise of ``noise_multiplier * max_grad_norm`` on the sum,
  by Opacus's ``DPOptimizer``; an empty Poisson batch still takes a noisy step, as the analysis assumes.
- The accountant is seeded with the site's earlier releases (from the ledger), so the epsilon it reports after
  this round is the site's total, as one long-lived PrivacyEngine would report it.

Protected: any single training example (one slice/image) of this site, against anyone who sees the weights the
site sends (the coordinator, other sites, whoever gets the global model). Not protected: a patient with many
images in the set is protected per image, not per patient, unless the data has one example per patient; the
site's data distribution as a whole (that is site-level DP at the server). Noise comes from torch's default
generator, not a cryptographically secure one (Opacus ``secure_mode`` needs torchcsprng).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from ..client.trainer import TrainConfig, default_device
from ..common.config import PrivacyConfig
from ..common.data.tensors import TrainingTensors
from ..common.diffusion.fast_paths import set_flash_attention, switch_on
from ..common.diffusion.loss import LossConfig, per_example_loss
from ..common.diffusion.model import ConditionalDenoiser, ModelConfig
from ..common.diffusion.schedules import make_schedule
from ..common.schema import ChannelSchema
from .accounting import Release

log = logging.getLogger(__name__)

OPACUS_MODES = {"hooks": "hooks", "functorch": "functorch", "ghost": "ghost"}


class PerExampleCriterion(torch.nn.Module):
    """The diffusion loss as an Opacus criterion: (B,) per-example losses when ``reduction`` is "none" (ghost
    clipping's first pass), their mean otherwise. ``network`` is set to the Opacus-wrapped model after
    ``make_private``."""

    def __init__(self, model: ConditionalDenoiser, schedule, loss_config: LossConfig, generator) -> None:
        super().__init__()
        self.reduction = "mean"
        self.schedule, self.loss_config, self.generator = schedule, loss_config, generator
        self.__dict__["model"] = model  # not a child module: Opacus must not wrap it twice
        self.__dict__["network"] = None

    def forward(self, images: torch.Tensor, available: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = per_example_loss(self.model, self.schedule, images, available, labels, self.loss_config,
                                  self.generator, network=self.network)
        return losses if self.reduction == "none" else losses.mean()


def poisson_sample_rate(examples: int, batch_size: int) -> float:
    """Opacus's sampling rate for a loader of ``examples`` in batches of ``batch_size`` (1 / number of batches)."""
    return 1.0 / math.ceil(examples / batch_size)


@dataclass(frozen=True)
class PrivateRoundResult:
    steps: int
    examples: int  # examples seen over all steps (Poisson batch sizes vary)
    loss: float
    seconds: float
    epsilon: float  # the site's total after this round, at ``delta``
    delta: float


class PrivateTrainer:
    """DP-SGD on one site's tensors. ``history`` holds the site's earlier releases (see ``ledger``)."""

    def __init__(self, schema: ChannelSchema, model_config: ModelConfig, config: TrainConfig, privacy: PrivacyConfig,
                 data: TrainingTensors, noise_multiplier: float, history: list[Release] = (),
                 device: str | torch.device | None = None) -> None:
        if privacy.grad_sample_mode not in OPACUS_MODES:
            raise ValueError(f"grad_sample_mode {privacy.grad_sample_mode!r} is not supported for training; "
                             f"use one of {sorted(OPACUS_MODES)}")
        self.config, self.privacy, self.noise_multiplier = config, privacy, noise_multiplier
        self.device = torch.device(device) if device else default_device()
        self.examples = len(data)
        self.delta = privacy.delta_for(self.examples)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = ConditionalDenoiser(schema, model_config).to(self.device)
        set_flash_attention(self.model, switch_on(config.flash_attention, self.device))
        # bf16 only when asked for: Opacus' per-example gradients are checked in fp32 (benchmarks/gpu.py measures bf16)
        self.autocast = config.precision == "bf16" and self.device.type == "cuda"
        self.schedule = make_schedule(config.schedule)
        self.loss_config = LossConfig(config.p_condition, config.p_uncond, config.noise)
        self.generator = torch.Generator().manual_seed(config.seed)
        data = data.to(self.device)
        loader = DataLoader(TensorDataset(data.images, data.available, data.labels), batch_size=config.batch_size)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        self.engine = PrivacyEngine(accountant=privacy.accountant)
        self.engine.accountant.history = list(history)
        self.ghost = privacy.grad_sample_mode == "ghost"
        if self.ghost and privacy.noise_multiplicity != 1:
            raise ValueError("ghost clipping needs noise_multiplicity = 1")
        criterion = PerExampleCriterion(self.model, self.schedule, self.loss_config, self.generator)  # ghost only
        private = self.engine.make_private(
            module=self.model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
            max_grad_norm=privacy.max_grad_norm, poisson_sampling=True, criterion=criterion,
            grad_sample_mode=OPACUS_MODES[privacy.grad_sample_mode])
        if self.ghost:  # Opacus wraps the criterion; the wrapper runs both backward passes
            self.private_model, self.optimizer, self.criterion, self.loader = private
            criterion.__dict__["network"] = self.private_model
        else:
            self.private_model, self.optimizer, self.loader = private
        self.sample_rate = float(self.loader.sample_rate)
        assert math.isclose(self.sample_rate, poisson_sample_rate(self.examples, config.batch_size))
        warmup = max(1, config.warmup_steps)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights, strict=True)

    def weights(self) -> dict[str, torch.Tensor]:
        """The plain model's weights (no Opacus ``_module.`` prefix): what the site sends."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def per_example_gradients(self, images: torch.Tensor, available: torch.Tensor,
                              labels: torch.Tensor) -> torch.Tensor:
        """Forward and backward one batch; leaves each parameter's ``grad_sample`` as (B, *shape), the gradient
        of each example's K-draw mean loss (before clipping). Returns the (B,) losses."""
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
            losses = per_example_loss(self.model, self.schedule, *repeated, self.loss_config, self.generator,
                                      network=self.private_model)
        losses.mean().backward()
        for p in self.model.parameters():
            if p.requires_grad and k > 1:
                grad_sample = self.optimizer._get_flat_grad_sample(p)
                p.grad_sample = grad_sample.view(batch, k, *p.shape).mean(dim=1)
        return losses.detach().view(batch, k).mean(dim=1)

    def train(self, steps: int) -> PrivateRoundResult:
        """``steps`` noisy steps on Poisson batches; the accountant records each."""
        self.private_model.train()
        losses, seen, done = [], 0, 0
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.config.seed)  # Poisson sampling and the DP noise draw from torch's generator
            while done < steps:
                for images, available, labels in self.loader:
                    batch_losses = self.per_example_gradients(images, available, labels)
                    self.optimizer.step()
                    self.lr_schedule.step()
                    losses.extend(batch_losses.tolist())
                    seen += len(batch_losses)
                    done += 1
                    if done == steps:
                        break
        seconds = time.perf_counter() - start
        epsilon = float(self.engine.accountant.get_epsilon(self.delta))
        return PrivateRoundResult(done, seen, float(sum(losses) / max(1, len(losses))), seconds, epsilon, self.delta)
