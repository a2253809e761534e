"""Tasks part 2 on real brain MRI (PGBM): reconstruction, segmentation and translation, each next to its baselines.

    .venv/bin/python benchmarks/tasks2_pgbm.py                        # trains the model (about 1 h on 2 cores)
    .venv/bin/python benchmarks/tasks2_pgbm.py --model RUN/model.pt   # reuse a trained checkpoint

One model serves all three: `meddiff train` on every slice of patients PGBM-001 and PGBM-003, with the four
contrasts and the tumour mask, at 64 px. It is tested on every slice of patients PGBM-006 and PGBM-008 (split by
patient, see pgbm_split.py). The supervised UNets train on the same training slices, for --baseline-seconds.
Every number comes from the task library the `meddiff` sub-commands run (meddiff.tasks: the same functions,
settings and reports); the table and results.json go to --out.
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
from pgbm_split import TEST_PATIENTS, TRAIN_PATIENTS, write_split, write_training_with_masks  # noqa: E402

from bench_run import run_meddiff, training_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _runs(model: Path, test_npz: Path, train_npz: Path, args) -> dict:
    """Each run of the table as a call of the task library: name -> () -> TaskResult."""
    import torch

    from meddiff.common.diffusion.loading import load_model
    from meddiff.tasks.reconstruct import ReconstructSettings
    from meddiff.tasks.reconstruct_task import image_channels, reconstruct_task, simulated
    from meddiff.tasks.segment import SegmentSettings, mask_channel, segment_task, train_unets
    from meddiff.tasks.task_data import load_task_data
    from meddiff.tasks.translate import TranslateSettings, channel_indices, supervised_unet, translate_task
    from meddiff.tasks.unet_baseline import UNetRecipe

    loaded, seed = load_model(model), args.seed
    test = load_task_data(str(test_npz), loaded, task="pgbm")
    test = test.subset(torch.arange(min(args.limit, len(test)))) if args.limit else test
    train = load_task_data(str(train_npz), loaded, task="pgbm")
    recipe = UNetRecipe(epochs=int(args.baseline_epochs), seconds=float(args.seconds), seed=seed,
                        device=str(loaded.device))
    samples, schema = int(args.samples), loaded.schema

    def reconstruct(acceleration: int, given: list[str], **options):
        index = image_channels(schema, "t2", given)
        data = test.subset(torch.nonzero(test.available[:, index]).flatten())
        condition, mask = data.images.clone(), torch.zeros_like(data.available)
        for name in given:
            mask[:, schema.index(name)] = data.available[:, schema.index(name)]
        m = simulated(data.images[:, index], loaded.resolution, acceleration, None, "random", seed)
        return reconstruct_task(loaded, m, index, ReconstructSettings(**options), condition if given else None,
                                mask if given else None, seed=seed)

    def segment():
        index = mask_channel(schema, None)
        settings = SegmentSettings(samples=samples)
        unets = train_unets(loaded, index, train, int(args.synthetic_pairs), recipe, settings.steps,
                            settings.batch_size, seed)
        return segment_task(loaded, test, index, settings, unets, seed)

    def translate(source: str, target: str):
        sources, index = channel_indices(schema, [source], target)
        unet = supervised_unet(train, sources, index, recipe)
        reference = train.images[train.available[:, index], index]
        return translate_task(loaded, test, [source], target, TranslateSettings(samples=samples), reference, unet,
                              seed)

    return {"reconstruction t2 x4 (random mask)": lambda: reconstruct(4, []),
            "reconstruction t2 x4, 8 samples": lambda: reconstruct(4, [], samples=8, steps=25),
            "reconstruction t2 x4, t1pre given": lambda: reconstruct(4, ["t1pre"]),
            "reconstruction t2 x8, t1pre given": lambda: reconstruct(8, ["t1pre"]),
            "segmentation (tumour)": segment,
            "translation t1pre -> t2": lambda: translate("t1pre", "t2"),
            "translation t2 -> flair": lambda: translate("t2", "flair")}


def _row(name: str, report: dict) -> tuple[str, str, str]:
    m = report["metrics"]
    if report["task"] == "reconstruction":
        return (f"{m['diffusion']['psnr']:.2f} dB / SSIM {m['diffusion']['ssim']:.3f}",
                f"zero-filled {m['zero_filled']['psnr']:.2f} dB; "
                f"TV {m['tv']['psnr']:.2f} dB / SSIM {m['tv']['ssim']:.3f}",
                f"{report['psnr_gain_over_zero_filled_db']:+.2f} dB vs zero-filled, "
                f"{m['diffusion']['psnr'] - m['tv']['psnr']:+.2f} dB vs TV")
    if report["task"] == "segmentation":
        unets = "; ".join(f"UNet {route} Dice {r['dice']:.3f} HD95 {r['hd95']:.1f}"
                          for route, r in report.get("unet", {}).items())
        return f"Dice {m['dice']:.3f}, HD95 {m['hd95']:.1f} px", unets, "-"
    best = {k: v for k, v in m.items() if k != "diffusion"}
    return (f"{m['diffusion']['psnr']:.2f} dB / SSIM {m['diffusion']['ssim']:.3f}",
            "; ".join(f"{k} {v['psnr']:.2f} dB / SSIM {v['ssim']:.3f}" for k, v in best.items()), "-")


def _device() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MEDDIFF_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default="bench_out/tasks2_pgbm")
    parser.add_argument("--model", help="a trained checkpoint (skips training)")
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--channels", default="", help="UNet widths of the diffusion model (default 32,64,64)")
    parser.add_argument("--batch-size", default="", help="training batch size (default 16)")
    parser.add_argument("--baseline-seconds", default="300",
                        help="wall-clock budget of each supervised UNet; 'same' = the diffusion model's training time")
    parser.add_argument("--baseline-epochs", default="200", help="epoch cap of each supervised UNet")
    parser.add_argument("--samples", default="8", help="draws per image for segmentation and translation")
    parser.add_argument("--synthetic-pairs", default="256", help="generated pairs for the synthetic-data UNet")
    parser.add_argument("--limit", type=int, default=0, help="test slices per task (0 = all 70)")
    parser.add_argument("--only", default="", help="run only the tasks whose name contains this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (Path(args.data) / "pgbm").exists():
        print(f"skipped: {Path(args.data) / 'pgbm'} is absent (give --data, the folder of the shared data sets)")
        return 0
    out = Path(args.out)
    train_npz = write_training_with_masks(Path(args.data), out / "data")
    _, test_npz = write_split(Path(args.data), out / "data")
    model = Path(args.model) if args.model else out / "model" / "model.pt"
    if not model.exists():
        sizes = (["--channels", args.channels] if args.channels else []) + (
            ["--batch-size", args.batch_size] if args.batch_size else [])
        run_meddiff(["train", "--data", str(train_npz), "--out", str(model.parent), "--steps", str(args.train_steps),
                     "--resolution", str(args.resolution), "--seed", str(args.seed), *sizes])
    trained = training_record(model)
    seconds = args.baseline_seconds
    if seconds == "same":
        if "seconds" not in trained:
            raise SystemExit(f"--baseline-seconds same needs {model.parent / 'train.json'} (the training time)")
        seconds = f"{trained['seconds']:.0f}"
    args.seconds = seconds
    results = {}
    for i, (name, run) in enumerate(_runs(model, test_npz, train_npz, args).items()):
        if args.only and args.only not in name:
            continue
        result = run()
        result.save(out / f"{i}_{result.task}")
        results[name] = result.report
    summary = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "date": time.strftime("%Y-%m-%d"),
               "model": str(model), "train_steps": trained.get("total_steps"), "train_seconds": trained.get("seconds"),
               "baseline_seconds": float(seconds), "device": _device(),
               "train_patients": TRAIN_PATIENTS, "test_patients": TEST_PATIENTS, "results": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=f"PGBM tasks, part 2 (train {TRAIN_PATIENTS} all slices with masks, test {TEST_PATIENTS}; "
                        f"{summary['train_steps']} training steps)")
    for column in ("task", "diffusion", "baselines", "gain"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for name, report in results.items():
        table.add_row(name, *_row(name, report))
    Console(width=200).print(table)
    print(f"results -> {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
