"""GPU speed in one run: the plain MONAI loop and meddiff's paths on the same network, batch and card.

Config (the MONAI 2d_ddpm tutorial network): DiffusionModelUNet channels (128, 256, 256), attention
(False, True, True), 1 res block, 256 head channels, 64x64, 1 channel. Rows:

- training, batch 256: MONAI plain loop (DiffusionInferer + DDPMScheduler, Adam, MSE) fp32 / bf16 autocast /
  bf16 + torch.compile, then meddiff's trainer (masked channel-conditional loss, AdamW, EMA, clipping) with its
  fast paths: bf16 + SDPA attention + fused AdamW + device RNG, eager (also with channels-last) and compiled;
- DP training, batch 64 (expected Poisson batch): meddiff non-DP (the reference), Opacus hooks (fp32),
  ghost clipping fp32 and bf16 (one draw per example);
- sampling, batch 256: MONAI DDIMScheduler 50 steps fp32 and bf16, meddiff DDIM-50 with bf16 + SDPA +
  CUDA graphs (eager, also with channels-last, and compiled), and DPM-Solver++(2M) in 20 and 10 steps.

MFU = achieved FLOP/s / the card's dense bf16 peak; FLOPs are counted with ``torch.utils.flop_counter`` on the
MONAI network (one forward, or forward + backward for training, per image). Each row's peak memory is
``torch.cuda.max_memory_allocated`` during that row. Ratios are against the row named in "vs".
The fast solver's quality against DDIM-50 is checked on a trained model by
tests/commands/test_phantom_quality.py (an untrained network has no quality to compare).

    .venv/bin/python benchmarks/gpu.py                        # on a CUDA machine; writes bench_out/gpu.json
    .venv/bin/python benchmarks/gpu.py --only train --seconds 5
    .venv/bin/python benchmarks/gpu.py --device cpu --size 16 --batch 4 --dp-batch 4 --channels 16,32,32 \\
        --head-channels 16 --seconds 1 --no-compile      # a smoke run of every row on a CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from meddiff.common.config import PrivacyConfig
from meddiff.common.data.tensors import TrainingTensors
from meddiff.common.diffusion.fast_paths import FastPaths, apply_layout
from meddiff.common.diffusion.generate import Conditioning, Denoiser, sample
from meddiff.common.specs import ModelSpec, RecipeSpec, RuntimeSpec
from meddiff.common.training.trainer import Trainer
from meddiff.common.schema import ChannelSchema
from meddiff.privacy.dp_sgd import private_trainer

# dense bf16 peak of the card (datasheet, without sparsity), TFLOP/s
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


@dataclass
class Row:
    section: str
    name: str
    batch: int
    images_per_second: float = math.nan
    peak_gib: float = math.nan
    warmup_seconds: float = math.nan
    vs: str = ""
    ratio: float = math.nan
    mfu: float = math.nan
    note: str = ""
    error: str = ""
    extra: dict = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, images_per_call: float | None, seconds: float, warmup: int, device: torch.device,
            min_calls: int = 2) -> tuple[float, float, float]:
    """(images/s, peak GiB, warm-up seconds): ``warmup`` untimed calls (compilation happens there), then calls
    for about ``seconds``. ``fn`` may return the number of images it processed (Poisson batches vary)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    _sync(device)
    warm = time.perf_counter() - start
    calls, images, start = 0, 0.0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        done = fn()
        images += images_per_call if images_per_call is not None else float(done)
        calls += 1
        if calls >= min_calls and time.perf_counter() - start >= seconds:
            break
        if calls % 4 == 0:
            _sync(device)
    _sync(device)
    rate = images / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    return rate, peak, warm


def peak_flops(device: torch.device, override: float | None) -> float:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return math.nan
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return math.nan


def count_flops(model: torch.nn.Module, x: torch.Tensor, timesteps: torch.Tensor, backward: bool) -> float:
    """FLOPs of one call (forward, or forward + backward) per image."""
    with FlopCounterMode(display=False) as counter:
        out = model(x, timesteps=timesteps)
        if backward:
            out.float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.widths = tuple(int(c) for c in args.channels.split(","))
        self.attention = tuple(bool(int(a)) for a in args.attention.split(","))
        self.rows: list[Row] = []
        self.out = Path(args.out)
        self.peak = peak_flops(self.device, args.peak_tflops)
        self.schema = ChannelSchema(("image",))
        self.model_config = ModelSpec(channels=self.widths, attention_levels=self.attention, num_res_blocks=1,
                                      num_head_channels=args.head_channels, norm_num_groups=32, prediction="eps",
                                      schedule="ddpm")
        n = max(args.batch, args.dp_batch * 50)
        g = torch.Generator().manual_seed(0)
        images = torch.rand((n, 1, args.size, args.size), generator=g) * 2 - 1
        self.data = TrainingTensors(self.schema, images, torch.ones(n, 1, dtype=torch.bool),
                                    torch.full((n,), -1, dtype=torch.long))
        self.flops_train = self.flops_forward = math.nan

    # -- bookkeeping ---------------------------------------------------------------------------------------

    def record(self, row: Row, flops_per_image: float = math.nan) -> Row:
        reference = next((r for r in self.rows if r.name == row.vs), None)
        if reference is not None and reference.images_per_second > 0:
            row.ratio = row.images_per_second / reference.images_per_second
        row.mfu = row.images_per_second * flops_per_image / self.peak
        self.rows.append(row)
        status = row.error or (f"{row.images_per_second:.1f} img/s, {row.peak_gib:.1f} GiB, "
                               f"warm-up {row.warmup_seconds:.0f} s")
        print(f"[{row.section}] {row.name}: {status}", flush=True)
        self.save()
        return row

    def run(self, section: str, name: str, batch: int, make, vs: str = "", flops: float = math.nan,
            note: str = "") -> Row:
        """``make()`` builds the row's models and returns its measurement; both run inside the try, so a path
        that fails (to build, compile or run) is reported and the other rows still run."""
        row = Row(section, name, batch, vs=vs, note=note)
        if self.args.rows and not re.search(self.args.rows, name):
            return row  # not asked for: not run, not recorded
        try:
            row.images_per_second, row.peak_gib, row.warmup_seconds = make()()
        except Exception as error:  # a failing path is a result to report, not a reason to lose the others
            row.error = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
            traceback.print_exc()
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return self.record(row, flops)

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        info = {"device": self.where(), "torch": torch.__version__, "args": vars(self.args),
                "parameters_million": self.parameters_million(), "flops_train_per_image": self.flops_train,
                "flops_forward_per_image": self.flops_forward, "peak_bf16_flops": self.peak,
                "rows": [r.__dict__ for r in self.rows]}
        self.out.write_text(json.dumps(info, indent=1, default=str))

    def where(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"

    def parameters_million(self) -> float:
        return sum(p.numel() for p in self.monai_unet().parameters()) / 1e6

    # -- the MONAI plain loop ---------------------------------------------------------------------------------

    def monai_unet(self) -> DiffusionModelUNet:
        torch.manual_seed(0)
        return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=self.widths,
                                  attention_levels=self.attention, num_res_blocks=1,
                                  num_head_channels=self.args.head_channels).to(self.device)

    def count(self) -> None:
        unet = self.monai_unet()
        b = min(8, self.args.batch)
        x = torch.randn(b, 1, self.args.size, self.args.size, device=self.device)
        t = torch.randint(0, 1000, (b,), device=self.device)
        self.flops_forward = count_flops(unet, x, t, backward=False)
        self.flops_train = count_flops(unet, x, t, backward=True)

    def monai_train(self, bf16: bool, compile_: bool):
        b, device = self.args.batch, self.device
        unet = self.monai_unet()
        model = torch.compile(unet) if compile_ else unet
        optimizer = torch.optim.Adam(unet.parameters(), lr=2.5e-5)
        inferer = DiffusionInferer(DDPMScheduler(num_train_timesteps=1000))
        images = self.data.images[:b].to(device)

        def step():
            noise = torch.randn_like(images)
            timesteps = torch.randint(0, 1000, (b,), device=device).long()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                prediction = inferer(inputs=images, diffusion_model=model, noise=noise, timesteps=timesteps)
            loss = F.mse_loss(prediction.float(), noise.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return lambda: measure(step, b, self.args.seconds, self.args.warmup + (3 if compile_ else 0), device)

    def monai_sample(self, bf16: bool):
        b, device = self.args.batch, self.device
        unet = self.monai_unet().eval()
        inferer = DiffusionInferer(DDPMScheduler(num_train_timesteps=1000))
        ddim = DDIMScheduler(num_train_timesteps=1000)
        ddim.set_timesteps(50)
        noise = torch.randn((b, 1, self.args.size, self.args.size), device=device)

        @torch.no_grad()
        def call():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                inferer.sample(noise, unet, ddim, verbose=False)

        return lambda: measure(call, b, self.args.seconds, 1, device, min_calls=1)

    # -- meddiff ---------------------------------------------------------------------------------------------

    def trainer(self, batch: int, compile_: str, precision: str = "auto", channels_last: str = "off") -> Trainer:
        return Trainer(self.schema, self.model_config, RecipeSpec(batch_size=batch, learning_rate=1e-4),
                       RuntimeSpec(compile=compile_, precision=precision, checkpoint_every=10**9,
                                   channels_last=channels_last), self.device, steps=10**9)

    def ours_train(self, batch: int, compile_: str, channels_last: str = "off"):
        trainer = self.trainer(batch, compile_, channels_last=channels_last)
        data = self.data
        steps = 10  # the trainer looks at its device-side counters once per call

        def call():
            trainer.train(data, steps=steps)
        warm = self.args.warmup + (3 if compile_ == "on" else 0)
        return lambda: measure(call, batch * steps, self.args.seconds, max(1, warm // steps + 1), self.device)

    def ours_dp(self, mode: str, precision: str):
        privacy = PrivacyConfig(enabled=True, max_grad_norm=1.0, noise_multiplicity=1, grad_sample_mode=mode)
        trainer = private_trainer(self.schema, self.model_config, RecipeSpec(batch_size=self.args.dp_batch,
                                                                              learning_rate=1e-4),
                                  privacy, self.data, noise_multiplier=1.0, device=self.device,
                                  runtime=RuntimeSpec(compile="off", precision=precision))
        steps = 5

        def call():
            return trainer.train(steps).examples
        return lambda: measure(call, None, self.args.seconds, 1, self.device)

    def ours_sample(self, sampler: str, steps: int, compile_: str, channels_last: bool = False):
        b, device = self.args.batch, self.device
        trainer = self.trainer(b, "off")
        model = trainer.ema.module.eval()
        if not channels_last:
            model.to(memory_format=torch.contiguous_format)
        apply_layout(model, 2, flash_attention=device.type == "cuda",
                     channels_last=channels_last and device.type == "cuda")
        conditioning = Conditioning.nothing((b, 1, self.args.size, self.args.size), device)
        fast = FastPaths(compile=compile_, cuda_graphs="auto")
        denoiser = Denoiser(model, trainer.schedule)  # one denoiser: its compiled network and graphs are kept

        def call():
            sample(denoiser, conditioning, sampler=sampler, steps=steps, fast_paths=fast,
                   generator=torch.Generator(device).manual_seed(0))
        return lambda: measure(call, b, self.args.seconds, 1, device, min_calls=1)

    # -- the run -----------------------------------------------------------------------------------------------

    def all(self) -> None:
        a, compile_ = self.args, not self.args.no_compile
        self.count()
        ft, ff = self.flops_train, self.flops_forward
        b, bd = a.batch, a.dp_batch
        if "train" in a.only:
            self.run("train", "MONAI plain loop fp32", b, lambda: self.monai_train(False, False), flops=ft)
            self.run("train", "MONAI plain loop bf16", b, lambda: self.monai_train(True, False), flops=ft)
            if compile_:
                self.run("train", "MONAI plain loop bf16 + compile", b, lambda: self.monai_train(True, True),
                         flops=ft)
            reference = "MONAI plain loop bf16 + compile" if compile_ else "MONAI plain loop bf16"
            self.run("train", "meddiff fast paths, eager", b, lambda: self.ours_train(b, "off"), vs=reference,
                     flops=ft, note="bf16, SDPA, fused AdamW, device RNG, no host sync")
            self.run("train", "meddiff fast paths, eager, channels-last", b,
                     lambda: self.ours_train(b, "off", "on"), vs=reference, flops=ft, note="as above + channels-last")
            if compile_:
                self.run("train", "meddiff fast paths + compile", b, lambda: self.ours_train(b, "on"), vs=reference,
                         flops=ft)
        if "dp" in a.only:
            reference = f"meddiff no DP, batch {bd}"
            self.run("dp", reference, bd, lambda: self.ours_train(bd, "off"), flops=ft,
                     note="eager, like the DP rows (Opacus hooks do not compile)")
            for name, mode, precision in (("Opacus hooks fp32", "hooks", "fp32"),
                                          ("Opacus hooks bf16", "hooks", "bf16"),
                                          ("functorch fp32", "functorch", "fp32"),
                                          ("ghost clipping fp32", "ghost", "fp32"),
                                          ("ghost clipping bf16", "ghost", "bf16")):
                self.run("dp", name, bd, lambda: self.ours_dp(mode, precision), vs=reference, flops=ft)
        if "sample" in a.only:
            self.run("sample", "MONAI DDIM-50 fp32", b, lambda: self.monai_sample(False), flops=50 * ff)
            self.run("sample", "MONAI DDIM-50 bf16", b, lambda: self.monai_sample(True), flops=50 * ff)
            ref = "MONAI DDIM-50 bf16"
            self.run("sample", "meddiff DDIM-50, graphs", b, lambda: self.ours_sample("ddim", 50, "off"),
                     vs=ref, flops=50 * ff, note="bf16, SDPA, CUDA graphs")
            self.run("sample", "meddiff DDIM-50, graphs, channels-last", b,
                     lambda: self.ours_sample("ddim", 50, "off", channels_last=True), vs=ref, flops=50 * ff,
                     note="as above + channels-last")
            best = "off"
            if compile_:
                row = self.run("sample", "meddiff DDIM-50, graphs + compile", b,
                               lambda: self.ours_sample("ddim", 50, "on"), vs=ref, flops=50 * ff)
                eager = next((r for r in self.rows if r.name == "meddiff DDIM-50, graphs"), None)
                best = "on" if not row.error and (eager is None or not row.ratio <= eager.ratio) else "off"
            for steps in (20, 10):
                self.run("sample", f"meddiff DPM-Solver++(2M) {steps}", b,
                         lambda: self.ours_sample("dpm++2m", steps, best), vs=ref, flops=steps * ff,
                         note=f"compile {best}")

    def table(self) -> Table:
        a = self.args
        table = Table(title=f"{self.where()}: {a.size} px, UNet {self.widths}, attention {self.attention}, "
                            f"{self.parameters_million():.1f} M parameters; FLOPs/image: train "
                            f"{self.flops_train / 1e9:.1f} G, forward {self.flops_forward / 1e9:.1f} G")
        for column in ("section", "path", "batch", "img/s", "vs", "ratio", "MFU", "peak GiB", "warm-up s", "note"):
            table.add_column(column, overflow="fold")
        for r in self.rows:
            table.add_row(r.section, r.name, str(r.batch), f"{r.images_per_second:.1f}" if not r.error else "failed",
                          r.vs, f"{r.ratio:.2f}", f"{100 * r.mfu:.1f} %" if r.mfu == r.mfu else "-",
                          f"{r.peak_gib:.1f}", f"{r.warmup_seconds:.0f}", r.error or r.note)
        return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dp-batch", type=int, default=64)
    parser.add_argument("--channels", default="128,256,256")
    parser.add_argument("--attention", default="0,1,1")
    parser.add_argument("--head-channels", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per row (compiling rows get 3 more)")
    parser.add_argument("--only", default="train,dp,sample", help="sections to run")
    parser.add_argument("--rows", default="", help="run only the rows whose name matches this regex")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, if the card is not known")
    parser.add_argument("--out", default="bench_out/gpu.json")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    bench = Bench(args)
    bench.all()
    Console(width=200).print(bench.table())
    print(f"results: {bench.out}")


if __name__ == "__main__":
    main()
