"""3D segmentation of the hippocampus (MSD Task04 crops, NIfTI): the 3D model's 8-draw ensemble next to a
supervised 3D MONAI UNet, Dice and HD95 on held-out volumes.

    .venv/bin/python benchmarks/hippocampus_3d.py                       # trains the 3D model (~15 min on 2 cores)
    .venv/bin/python benchmarks/hippocampus_3d.py --model RUN/model.pt  # reuse a trained checkpoint
    .venv/bin/python benchmarks/hippocampus_3d.py --resolution 32 --autoencoder-steps 400  # a latent 3D model

Split by case: the first 200 image/label pairs (sorted by name) train, the rest test. The split is written
under --out (the run folder, outside version control) as hard links where the file system allows, else copies:
meddiff does not follow symbolic links out of a data folder. Volumes are resized to --resolution cubed; the
labels (anterior, posterior) are scored as one foreground. With --autoencoder-steps the model is a latent one
(docs/latent.md): a 3D autoencoder trained first at --resolution, the denoiser on its latents (a side 4 times
smaller); the UNet baseline is trained at the same --resolution.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MEDDIFF_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default="bench_out/hippocampus_3d")
    parser.add_argument("--model", help="a trained 3D checkpoint (skips training)")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--train-cases", type=int, default=200)
    parser.add_argument("--test-cases", type=int, default=0, help="test on the last N cases only (0 = all the rest)")
    parser.add_argument("--samples", default="8", help="draws of the segmentation ensemble")
    parser.add_argument("--baseline-seconds", default="300")
    parser.add_argument("--autoencoder-steps", type=int, default=0,
                        help="train a latent model: this many autoencoder steps first (0 = a pixel model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = Path(args.data) / "hippocampus"
    if not source.exists():
        print(f"skipped: {source} is absent (give --data, the folder of the shared data sets)")
        return 0
    out = Path(args.out).resolve()
    train, test = split_cases(source, out / "data", train_cases=args.train_cases, pattern="*.nii*",
                              test_cases=args.test_cases)
    configs = write_data_configs(out, {"train": train, "test": test},
                                 f"slices = false\nresolution = {args.resolution}\n")
    model = Path(args.model) if args.model else out / "model" / "model.pt"
    latent = []
    if args.autoencoder_steps and not args.model:
        autoencoder = out / "autoencoder" / "autoencoder.pt"
        if not autoencoder.exists():
            run_meddiff(["train-autoencoder", "--data", str(train), "--config", str(configs["train"]), "--out",
                         str(autoencoder.parent), "--steps", str(args.autoencoder_steps), "--batch-size", "8",
                         "--seed", str(args.seed)])
        latent = ["--autoencoder", str(autoencoder)]
    if not model.exists():
        run_meddiff(["train", "--data", str(train), "--config", str(configs["train"]), "--out", str(model.parent),
                     "--steps", str(args.train_steps), "--channels", "16,32,32", "--batch-size", "8",
                     "--seed", str(args.seed), *latent])
    report = segment_with_baselines(model, test, train, configs["test"], out / "segment", samples=int(args.samples),
                                    baseline_seconds=float(args.baseline_seconds), seed=args.seed)
    trained = training_record(model)
    summary = {"model": str(model), "resolution": args.resolution, "train_steps": trained.get("total_steps"),
               "train_seconds": trained.get("seconds"), "segment": report}
    if latent:
        stage1 = json.loads((Path(latent[1]).parent / "autoencoder.json").read_text())
        summary["autoencoder"] = {k: stage1[k] for k in ("steps", "seconds", "scale", "sha256", "quality")}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"results -> {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
