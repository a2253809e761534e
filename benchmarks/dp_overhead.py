"""DP-SGD overhead: DP step time and peak memory over plain training, for each grad-sample mode.

    .venv/bin/python benchmarks/dp_overhead.py                     # CPU (and CUDA when available)
    .venv/bin/python benchmarks/dp_overhead.py --devices cpu --steps 10

Every row runs in its own process (so peak memory is that configuration's), on the same phantom batch size and
default model; the ratio is against the plain trainer step measured in the same run. K is DPDM's noise
multiplicity (draws per example averaged before clipping); DP rows are batch 16 expected (Poisson).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

CONFIGS = [("plain", 1), ("hooks", 1), ("functorch", 1), ("hooks", 4), ("functorch", 4)]


def _measure(mode: str, k: int, device: str, steps: int, threads: int) -> dict:
    import torch

    from meddiff.common.config import PrivacyConfig
    from meddiff.common.data.training_set import load_training_set
    from meddiff.common.specs import ModelSpec, RecipeSpec
    from meddiff.common.training.trainer import Trainer
    from meddiff.privacy.dp_sgd import private_trainer

    torch.set_num_threads(threads)
    data = load_training_set("phantom").tensors
    config = RecipeSpec(batch_size=16)
    if mode == "plain":
        trainer = Trainer(data.schema, recipe=config, device=device, steps=10**9)
        run = lambda n: trainer.train(data, n)  # noqa: E731
    else:
        privacy = PrivacyConfig(enabled=True, noise_multiplicity=k, grad_sample_mode=mode)
        trainer = private_trainer(data.schema, ModelSpec(), config, privacy, data, 1.0, device=device)
        run = trainer.train
    run(2)  # warm-up (allocator, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run(steps)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"seconds_per_step": seconds, "peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="auto", help="comma-separated: cpu,cuda (auto: cpu, plus cuda if any)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--one", nargs=3, metavar=("MODE", "K", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(args.one[0], int(args.one[1]), args.one[2], args.steps, args.threads)))
        return
    devices = args.devices.split(",") if args.devices != "auto" else ["cpu"] + (["cuda"] if _has_cuda() else [])
    table = Table(title=f"DP-SGD overhead, default model, phantom 32 px, batch 16, {args.threads} threads")
    for column in ("device", "mode", "K", "s / step", "x plain", "peak memory MiB", "x plain memory"):
        table.add_column(column, justify="right")
    for device in devices:
        base = None
        for mode, k in CONFIGS:
            out = subprocess.run([sys.executable, __file__, "--one", mode, str(k), device, "--steps", str(args.steps),
                                  "--threads", str(args.threads)], capture_output=True, text=True)
            if out.returncode:
                table.add_row(device, mode, str(k), "failed", out.stderr.strip().splitlines()[-1][:60], "", "")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            base = base or row
            table.add_row(device, mode, str(k), f"{row['seconds_per_step']:.3f}",
                          f"{row['seconds_per_step'] / base['seconds_per_step']:.2f}",
                          f"{row['peak_bytes'] / 2**20:.0f}", f"{row['peak_bytes'] / base['peak_bytes']:.2f}")
    Console(width=120).print(table)


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
