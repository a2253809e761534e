"""Training and sampling images/s of meddiff against a plain MONAI loop on the same network and batch.

Baseline: MONAI's ``DiffusionInferer`` + ``DDPMScheduler`` for training (the condition concatenated to the
noisy input, MSE on the noise) and ``DiffusionInferer.sample`` with ``DDIMScheduler`` for sampling. Ours: the
local trainer's step (channel-conditional masked loss, AdamW, EMA, clipping) and ``sample`` with our DDIM.
Both use one ``DiffusionModelUNet`` of the same configuration (input [x_t, condition, availability], no class
embedding so the networks are identical). Ratios > 1 mean meddiff is faster.

    .venv/bin/python benchmarks/diffusion_speed.py            # CPU, small model, 32 px
    .venv/bin/python benchmarks/diffusion_speed.py --device cuda --size 64 --batch 256 --channels 128,256,256
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from rich.console import Console
from rich.table import Table

from meddiff.common.specs import ModelSpec, RecipeSpec
from meddiff.common.training.trainer import Trainer
from meddiff.common.data.phantom import SCHEMA
from meddiff.common.data.tensors import TrainingTensors
from meddiff.common.diffusion.generate import Conditioning, Denoiser, sample
from meddiff.common.schema import ChannelSchema


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(fn, images_per_call: int, calls: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return images_per_call * calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", default="32,64,64")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the product's CPU machines have 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    widths = tuple(int(c) for c in args.channels.split(","))
    config = ModelSpec(channels=widths, attention_levels=tuple(i == len(widths) - 1 for i in range(len(widths))),
                         num_head_channels=min(32, widths[-1]))
    schema = ChannelSchema(SCHEMA.channels)  # no classes: the baseline network is then exactly ours
    c, b, size = schema.num_channels, args.batch, args.size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((b * 4, c, size, size), generator=generator) * 2 - 1
    data = TrainingTensors(schema, images, torch.ones(b * 4, c, dtype=torch.bool), torch.full((b * 4,), -1))

    trainer = Trainer(schema, config, RecipeSpec(batch_size=b), device=device, steps=10**9)
    ours_train = _rate(lambda: trainer.train(data, 1), b, args.train_steps, 3, device)

    baseline = Trainer(schema, config, device=device).model.unet  # same architecture, fresh weights
    optimizer = torch.optim.AdamW(baseline.parameters(), lr=1e-4)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    inferer = DiffusionInferer(scheduler)
    x = images[:b].to(device)
    condition = torch.cat([torch.zeros_like(x), torch.zeros_like(x)], dim=1)

    def baseline_step() -> None:
        noise = torch.randn_like(x)
        timesteps = torch.randint(0, 1000, (b,), device=device).long()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            prediction = inferer(inputs=x, diffusion_model=baseline, noise=noise, timesteps=timesteps,
                                 condition=condition, mode="concat")
            loss = torch.nn.functional.mse_loss(prediction.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    baseline_train = _rate(baseline_step, b, args.train_steps, 3, device)

    ddim = DDIMScheduler(num_train_timesteps=1000)
    ddim.set_timesteps(args.sample_steps)
    noise = torch.randn((b, c, size, size), device=device)

    @torch.no_grad()
    def baseline_sample() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            inferer.sample(noise, baseline, ddim, conditioning=condition, mode="concat", verbose=False)

    denoiser = Denoiser(trainer.ema.module, trainer.schedule)
    conditioning = Conditioning.nothing((b, c, size, size), device)
    sample_generator = torch.Generator(device).manual_seed(0)

    def ours_sample() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            sample(denoiser, conditioning, sampler="ddim", steps=args.sample_steps,
                   generator=sample_generator)

    baseline_sampling = _rate(baseline_sample, b, 2, 1, device)
    ours_sampling = _rate(ours_sample, b, 2, 1, device)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'CPU'}, " \
        f"{args.threads} threads"
    table = Table(title=f"meddiff vs plain MONAI loop: {where}; {size} px, batch {b}, UNet {widths}, "
                        f"{sum(p.numel() for p in baseline.parameters()) / 1e6:.2f} M parameters")
    for column in ("work", "MONAI img/s", "meddiff img/s", "ratio meddiff / MONAI"):
        table.add_column(column, justify="right" if column != "work" else "left")
    table.add_row("training step", f"{baseline_train:.1f}", f"{ours_train:.1f}", f"{ours_train / baseline_train:.2f}")
    table.add_row(f"DDIM sampling, {args.sample_steps} steps", f"{baseline_sampling:.2f}", f"{ours_sampling:.2f}",
                  f"{ours_sampling / baseline_sampling:.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
