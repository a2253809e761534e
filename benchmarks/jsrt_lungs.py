"""Lung segmentation on real chest radiographs (JSRT with SCR-style masks): the diffusion model's ensemble, a
MONAI UNet trained on generated (image, mask) pairs, and the same UNet trained on the real pairs; Dice and HD95.

    .venv/bin/python benchmarks/jsrt_lungs.py                       # trains the model (~25 min on 2 cores)
    .venv/bin/python benchmarks/jsrt_lungs.py --model RUN/model.pt  # reuse a trained checkpoint

The masks hold three structures: 150 = right lung, 200 = left lung, 250 = heart (checked on the files: 150 and
200 lie left and right of the midline, 250 between them, lower). The model learns the two lungs as labels 1 and
2 (`mask_values = [150, 200]`; the heart is background); the scores take both lungs as one foreground.
Split by case (one radiograph per patient): every 5th image, sorted by name, is a test image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import run_meddiff, segment_with_baselines, training_record, write_data_configs  # noqa: E402
from case_split import split_cases  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LUNG_VALUES = "[150, 200]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MEDDIFF_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default="bench_out/jsrt_lungs")
    parser.add_argument("--model", help="a trained checkpoint (skips training)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--channels", default="32,64,64", help="UNet widths of the diffusion model")
    parser.add_argument("--baseline-seconds", default="300", help="wall-clock budget of each supervised UNet")
    parser.add_argument("--synthetic-pairs", default="256")
    parser.add_argument("--samples", default="8")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = Path(args.data) / "jsrt"
    if not source.exists():
        print(f"skipped: {source} is absent (give --data, the folder of the shared data sets)")
        return 0
    out = Path(args.out).resolve()
    train, test = split_cases(source, out / "data", test_every=5, labels="masks", pattern="*.png")
    configs = write_data_configs(out, {"train": train, "test": test},
                                 f"mask_values = {LUNG_VALUES}\nresolution = {args.resolution}\n")
    model = Path(args.model) if args.model else out / "model" / "model.pt"
    if not model.exists():
        run_meddiff(["train", "--data", str(train), "--config", str(configs["train"]), "--out", str(model.parent),
                     "--steps", str(args.train_steps), "--channels", args.channels, "--seed", str(args.seed)])
    report = segment_with_baselines(model, test, train, configs["test"], out / "segment", samples=int(args.samples),
                                    baseline_seconds=float(args.baseline_seconds),
                                    synthetic_pairs=int(args.synthetic_pairs), seed=args.seed)
    trained = training_record(model)
    summary = {"model": str(model), "resolution": args.resolution, "train_steps": trained.get("total_steps"),
               "train_seconds": trained.get("seconds"), "train_images": len(list((train / "images").glob("*.png"))),
               "test_images": len(list((test / "images").glob("*.png"))), "segment": report}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    m = report["metrics"]
    print(f"diffusion ensemble: Dice {m['dice']:.3f}, HD95 {m['hd95']:.2f} px")
    for route, r in report.get("unet", {}).items():
        print(f"UNet, {route}: Dice {r['dice']:.3f}, HD95 {r['hd95']:.2f} px")
    print(f"results -> {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
