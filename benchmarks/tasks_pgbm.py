"""Tasks on real brain MRI (PGBM): anomaly detection, denoising and super-resolution, each next to its baseline.

    .venv/bin/python benchmarks/tasks_pgbm.py                        # trains the model (about 1 h on 2 cores)
    .venv/bin/python benchmarks/tasks_pgbm.py --model RUN/model.pt   # reuse a trained checkpoint

One model serves all three tasks: trained with `meddiff train` on the tumour-free slices of patients PGBM-001 and
PGBM-003 (contrasts t1pre, t1post, flair, t2; 64 px), tested on every slice of patients PGBM-006 and PGBM-008
(split by patient: see pgbm_split.py). Every number comes from the task library the `meddiff` sub-commands run
(meddiff.tasks: the same functions, settings and reports); the table and results.json go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pgbm_split import TEST_PATIENTS, TRAIN_PATIENTS, write_split  # noqa: E402

from bench_run import run_meddiff, training_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _runs(model: Path, test_npz: Path, limit: int, seed: int) -> dict:
    """Each run of the table as a call of the task library: name -> () -> TaskResult."""
    import torch

    from meddiff.common.diffusion.loading import load_model
    from meddiff.tasks.anomaly import AnomalySettings, anomaly_task
    from meddiff.tasks.denoise import DenoiseSettings, denoise_task
    from meddiff.tasks.super_resolve import SuperResolveSettings, super_resolve_task
    from meddiff.tasks.task_data import load_task_data

    loaded = load_model(model)
    data = load_task_data(str(test_npz), loaded, task="pgbm")
    data = data.subset(torch.arange(min(limit, len(data)))) if limit else data
    sr = {"steps": 10, "samples": 8, "start_t": 0.3}
    denoise = {"Gaussian 0.1, DDIM 20 steps": ("gaussian", 20),
               "Gaussian 0.1, one step (posterior mean)": ("gaussian", 1),
               "Rician 0.1, DDIM 20 steps": ("rician", 20), "Rician 0.1, one step": ("rician", 1),
               "Poisson 0.1, DDIM 20 steps": ("poisson", 20), "Poisson 0.1, one step": ("poisson", 1)}
    runs = {f"anomaly: AnoDDPM (Gaussian, t*={depth})": lambda depth=depth: anomaly_task(
        loaded, data, AnomalySettings(depth=depth), seed) for depth in (0.3, 0.5)}
    runs.update({f"denoise: {name}": lambda noise=noise, steps=steps: denoise_task(
        loaded, data, DenoiseSettings(noise_model=noise, steps=steps), 0.1, seed=seed)
        for name, (noise, steps) in denoise.items()})
    sr_runs = {"super-resolution x2 (8 samples from bicubic at t=0.3)": (SuperResolveSettings(2, **sr), 0.0),
               "super-resolution x2 (1 sample)": (SuperResolveSettings(2), 0.0),
               "super-resolution x4 (8 samples from bicubic at t=0.3)": (SuperResolveSettings(4, **sr), 0.0),
               "joint denoise + SR x2, noise 0.05 (8 samples)": (SuperResolveSettings(2, noise_level=0.1, **sr), 0.05)}
    runs.update({name: lambda s=settings, level=level: super_resolve_task(loaded, data, s, True, level, seed)
                 for name, (settings, level) in sr_runs.items()})
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MEDDIFF_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default="bench_out/tasks_pgbm")
    parser.add_argument("--model", help="a trained checkpoint (skips training)")
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--limit", type=int, default=0, help="test slices per task (0 = all 70)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (Path(args.data) / "pgbm").exists():
        print(f"skipped: {Path(args.data) / 'pgbm'} is absent (give --data, the folder of the shared data sets)")
        return 0
    out = Path(args.out)
    train_npz, test_npz = write_split(Path(args.data), out / "data")
    model = Path(args.model) if args.model else out / "model" / "model.pt"
    start = time.perf_counter()
    if not model.exists():
        run_meddiff(["train", "--data", str(train_npz), "--out", str(model.parent), "--steps", str(args.train_steps),
              "--resolution", str(args.resolution), "--seed", str(args.seed)])
    train_seconds = time.perf_counter() - start
    results = {name: run().report for name, run in _runs(model, test_npz, args.limit, args.seed).items()}
    trained = training_record(model)
    summary = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "date": time.strftime("%Y-%m-%d"),
               "model": str(model), "train_steps": trained.get("total_steps"),
               "train_seconds": trained.get("seconds", train_seconds), "train_patients": TRAIN_PATIENTS,
               "test_patients": TEST_PATIENTS, "results": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=f"PGBM tasks (train {TRAIN_PATIENTS} tumour-free, test {TEST_PATIENTS}; "
                        f"{summary['train_steps']} training steps)")
    for column in ("task", "diffusion", "baseline", "gain"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for name, report in results.items():
        m = report["metrics"]
        if report["task"] == "anomaly detection":
            table.add_row(name, f"pixel AUROC {m['pixel_auroc']:.3f}, Dice {m['best_dice']:.3f}, "
                                f"image AUROC {m['auroc']:.3f}", "-", "-")
        elif report["task"] == "denoising":
            best = max((k for k in m if k not in ("diffusion", "noisy input")), key=lambda k: m[k]["psnr"])
            table.add_row(name, f"{m['diffusion']['psnr']:.2f} dB / SSIM {m['diffusion']['ssim']:.3f}",
                          f"{best} {m[best]['psnr']:.2f} dB; input {m['noisy input']['psnr']:.2f} dB",
                          f"{report['psnr_gain_over_best_baseline_db']:+.2f} dB vs {best}, "
                          f"{report['psnr_gain_over_input_db']:+.2f} dB vs input")
        else:
            table.add_row(name, f"{m['diffusion']['psnr']:.2f} dB / SSIM {m['diffusion']['ssim']:.3f}",
                          f"bicubic {m['bicubic']['psnr']:.2f} dB / SSIM {m['bicubic']['ssim']:.3f}",
                          f"{report['psnr_gain_over_bicubic_db']:+.2f} dB")
    Console(width=160).print(table)
    print(f"results -> {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
