"""Train on synthetic, test on real (TSTR) on PneumoniaMNIST: is the generated data useful for a classifier?

    .venv/bin/python benchmarks/tstr_pneumonia.py                        # trains the model (about 25 min, 2 cores)
    .venv/bin/python benchmarks/tstr_pneumonia.py --model RUN/model.pt   # reuse a trained checkpoint

The class-conditional model is trained with `meddiff train` on the train split (10 % of it held out for the
memorisation audit, as always). Synthetic images are drawn with the real training set's class proportions. The
fixed small CNN of meddiff.tasks.classifier is trained with one recipe on (a) the synthetic images, (b) the same
number of real training images, (c) all real training images, and tested on the real test split (624 images).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from meddiff.cli import main as meddiff

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = "medmnist/pneumoniamnist.npz"


def _split(path: Path, split: str, resolution: int):
    from meddiff.common.config import DataConfig
    from meddiff.common.data.training_set import load_training_set

    return load_training_set(str(path), DataConfig(npz_split=split), resolution).tensors


def _synthetic(model_path: Path, labels: torch.Tensor, steps: int, guidance: float, seed: int, batch: int = 250):
    from meddiff.common.diffusion.generate import Conditioning, sample
    from meddiff.common.diffusion.loading import load_model

    loaded = load_model(model_path)
    shape = (loaded.schema.num_channels, loaded.resolution, loaded.resolution)
    generator = torch.Generator(loaded.device).manual_seed(seed)
    images = []
    for first in range(0, len(labels), batch):
        y = labels[first:first + batch].to(loaded.device)
        nothing = torch.zeros((len(y), shape[0]), dtype=torch.bool, device=loaded.device)
        images.append(sample(loaded.denoiser,
                             Conditioning(torch.zeros((len(y), *shape), device=loaded.device), nothing, y),
                             sampler="ddim", steps=steps, guidance_scale=guidance, generator=generator).cpu())
    return torch.cat(images)


def main() -> int:
    from meddiff.tasks.classifier import ClassifierRecipe, evaluate, train_classifier

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MEDDIFF_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default="bench_out/tstr_pneumonia")
    parser.add_argument("--model", help="a trained class-conditional checkpoint (skips training)")
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--n-synthetic", type=int, default=2000)
    parser.add_argument("--sampling-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    archive = Path(args.data) / ARCHIVE
    if not archive.exists():
        print(f"skipped: {archive} is absent (give --data, the folder of the shared data sets)")
        return 0
    out = Path(args.out)
    model = Path(args.model) if args.model else out / "model" / "model.pt"
    if not model.exists():
        code = meddiff(["train", "--data", str(archive), "--out", str(model.parent), "--steps", str(args.train_steps),
                        "--resolution", "32", "--seed", str(args.seed)])
        if code:
            raise SystemExit(f"meddiff train failed with exit code {code}")
    real_train, real_test = _split(archive, "train", 32), _split(archive, "test", 32)
    g = torch.Generator().manual_seed(args.seed)
    same_count = torch.randperm(len(real_train), generator=g)[:args.n_synthetic]
    labels = real_train.labels[same_count]  # the real class proportions
    start = time.perf_counter()
    synthetic = _synthetic(model, labels, args.sampling_steps, args.guidance, args.seed)
    sampling_seconds = time.perf_counter() - start
    recipe = ClassifierRecipe(seed=args.seed)
    sets = {f"synthetic ({len(labels)})": (synthetic, labels),
            f"real ({len(labels)}, same count)": (real_train.images[same_count], labels),
            f"real (all {len(real_train)})": (real_train.images, real_train.labels)}
    rows = {}
    for name, (images, y) in sets.items():
        classifier = train_classifier(images, y, 2, recipe)
        rows[name] = evaluate(classifier, real_test.images, real_test.labels)
    trained = json.loads((model.parent / "train.json").read_text()) if (model.parent / "train.json").exists() else {}
    summary = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "date": time.strftime("%Y-%m-%d"),
               "model": str(model), "train_steps": trained.get("total_steps"), "train_seconds": trained.get("seconds"),
               "sampler": f"ddim {args.sampling_steps} steps, guidance {args.guidance}",
               "sampling_seconds": sampling_seconds, "classifier_recipe": vars(recipe), "results": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    from meddiff.common.grid import example_grid
    from meddiff.common.schema import Example

    shown = [Example(image=synthetic[i].numpy(), available=torch.ones(1, dtype=torch.bool).numpy())
             for i in range(16)]
    example_grid(shown, real_train.schema, out / "synthetic_grid.png")
    table = Table(title=f"PneumoniaMNIST TSTR: small CNN tested on the real test split ({len(real_test)} images); "
                        f"diffusion model {summary['train_steps']} steps")
    for column in ("trained on", "accuracy", "AUC"):
        table.add_column(column, justify="left" if column == "trained on" else "right")
    for name, r in rows.items():
        table.add_row(name, f"{r['accuracy']:.3f}", f"{r['auc']:.3f}")
    Console(width=140).print(table)
    print(f"results -> {out / 'results.json'}, {out / 'synthetic_grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
