"""The supervised baseline of the tasks that map images to images: a MONAI UNet trained on (input, target) pairs.

One recipe for every use, so comparisons differ only in the pairs:
- segmentation: image channels -> mask (one logit, MONAI DiceCE loss), trained on real pairs or on pairs the
  diffusion model generated (the synthetic-data route);
- translation: source contrasts -> target contrast (L1 loss), trained on the site's pairs.
Training stops at ``epochs`` or when ``seconds`` (a wall-clock budget, e.g. the diffusion model's) run out.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

log = logging.getLogger(__name__)
Tensor = torch.Tensor
KINDS = ("segmentation", "translation")


@dataclass(frozen=True)
class UNetRecipe:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = 1
    epochs: int = 200
    seconds: float = 0.0  # wall-clock budget; 0 = epochs only
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "cpu"  # the diffusion model's device, so that "the same time" means the same hardware


@dataclass
class TrainedUNet:
    network: UNet
    kind: str
    epochs: int
    seconds: float
    final_loss: float

    @torch.no_grad()
    def predict(self, inputs: Tensor, batch_size: int = 64) -> Tensor:
        """Segmentation: (N, *spatial) foreground probability; translation: (N, *spatial) the target. On the CPU."""
        self.network.eval()
        device = next(self.network.parameters()).device
        out = torch.cat([self.network(inputs[i:i + batch_size].to(device))[:, 0].cpu()
                         for i in range(0, len(inputs), batch_size)])
        return torch.sigmoid(out) if self.kind == "segmentation" else out


def train_unet(inputs: Tensor, targets: Tensor, kind: str, recipe: UNetRecipe = UNetRecipe()) -> TrainedUNet:
    """inputs: (N, C_in, *spatial) in [-1, 1]; targets: (N, *spatial), bool masks for segmentation or [-1, 1]
    images for translation. Spatial sizes must divide by 2 ** (len(channels) - 1)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if len(inputs) == 0:
        raise ValueError("no training pairs")
    spatial_dims = inputs.dim() - 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        network = UNet(spatial_dims=spatial_dims, in_channels=inputs.shape[1], out_channels=1,
                       channels=recipe.channels, strides=(2,) * (len(recipe.channels) - 1),
                       num_res_units=recipe.num_res_units).to(recipe.device)
    inputs, targets = inputs.to(recipe.device), targets.to(recipe.device)
    loss_fn = DiceCELoss(sigmoid=True) if kind == "segmentation" else torch.nn.L1Loss()
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.learning_rate)
    generator = torch.Generator().manual_seed(recipe.seed)
    targets = targets[:, None].float()
    # the loss is read back once per epoch (the wall-clock check), not once per step
    start, epoch, loss = time.perf_counter(), 0, torch.tensor(math.nan)
    network.train()
    while epoch < recipe.epochs and not (recipe.seconds and time.perf_counter() - start >= recipe.seconds):
        order = torch.randperm(len(inputs), generator=generator)
        for first in range(0, len(order), recipe.batch_size):
            rows = order[first:first + recipe.batch_size].to(recipe.device)
            loss = loss_fn(network(inputs[rows]), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epoch += 1
    seconds = time.perf_counter() - start
    final = float(loss.detach())
    log.info("%s UNet: %d epochs in %.0f s, last loss %.4f", kind, epoch, seconds, final)
    return TrainedUNet(network, kind, epoch, seconds, final)
