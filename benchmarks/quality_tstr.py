"""Is a class-conditional PneumoniaMNIST model's synthetic data useful? TSTR and feature-space fidelity, per seed.

    .venv/bin/python benchmarks/quality_tstr.py --real --data ARCHIVE --out REF          # the real-data reference
    .venv/bin/python benchmarks/quality_tstr.py --model M --extractor REF/extractor.pt --data ARCHIVE --out OUT

--real trains the fixed small CNN (meddiff.tasks.classifier, one recipe) on all real training images, once per
seed, and tests it on the real test split; the seed-0 network is saved as the feature extractor. Every CNN
keeps the epoch with the best AUC on the real validation split, never chosen on the test split (DPImageBench's
warning: choosing on the private test set inflates utility and breaks the privacy claim).
--model draws --n-synthetic images with the real training set's class proportions (DDIM, classifier-free
guidance), trains the same CNN on them per seed (train on synthetic, test on real: accuracy, AUC), and compares
the synthetic images with the real test images in the extractor's 128-d penultimate feature space (global
average pool after the last conv block): FID (Frechet distance of Gaussian fits) and precision / recall
(k-nearest-neighbour manifolds, k=3; Kynkaanniemi et al. 2019). Seeds change the draws and the CNN's seed
(with --one-draw only the CNN's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tstr_pneumonia import _split, _synthetic  # noqa: E402

from meddiff.tasks.classifier import (ClassifierRecipe, SmallCNN, evaluate,  # noqa: E402
                                      train_classifier_on_validation)

NEIGHBOURS = 3


@torch.no_grad()
def features(extractor: SmallCNN, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    extractor.eval()
    return torch.cat([extractor.features(images[i:i + batch].float()) for i in range(0, len(images), batch)]).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), the square root from the eigenvalues of S_a S_b."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    eigenvalues = torch.linalg.eigvals(s_a @ s_b).real.clamp(min=0)
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * eigenvalues.sqrt().sum())


def _covered(points: torch.Tensor, centres: torch.Tensor, k: int) -> float:
    """Fraction of ``points`` inside the k-NN manifold of ``centres`` (a ball per centre, radius = its k-th
    neighbour among the centres)."""
    radii = torch.cdist(centres, centres).kthvalue(k + 1, dim=1).values  # +1: a centre is its own 0-th neighbour
    return float((torch.cdist(points, centres) <= radii[None, :]).any(dim=1).double().mean())


def precision_recall(real: torch.Tensor, synthetic: torch.Tensor, k: int = NEIGHBOURS) -> tuple[float, float]:
    """Precision: synthetic samples on the real manifold (fidelity); recall: real samples on the synthetic one
    (coverage)."""
    return _covered(synthetic, real, k), _covered(real, synthetic, k)


def _real_reference(archive: Path, resolution: int, seeds: list[int], out: Path, count: int = 0) -> dict:
    train, test = _split(archive, "train", resolution), _split(archive, "test", resolution)
    validation = _split(archive, "val", resolution)
    described = f"all {len(train)} real training images"
    if count:  # a random subset of the real training images (the quick budget)
        described = f"{count} of the {len(train)} real training images (random, seed 0)"
        train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:count])
    per_seed = {}
    for seed in seeds:
        classifier, epoch = train_classifier_on_validation(train.images, train.labels, 2, ClassifierRecipe(seed=seed),
                                                           (validation.images, validation.labels))
        per_seed[seed] = {**evaluate(classifier, test.images, test.labels), "judge_epoch": epoch}
        if seed == seeds[0]:
            torch.save(classifier.state_dict(), out / "extractor.pt")
    return {"trained_on": described, "test_images": len(test), "per_seed": per_seed}


def _model_quality(args, archive: Path, seeds: list[int], out: Path) -> dict:
    from meddiff.common.grid import example_grid
    from meddiff.common.schema import Example

    train, test = _split(archive, "train", args.resolution), _split(archive, "test", args.resolution)
    validation = _split(archive, "val", args.resolution)
    extractor = SmallCNN(train.images.shape[1], 2)
    extractor.load_state_dict(torch.load(args.extractor, weights_only=True))
    real_features = features(extractor, test.images)
    per_seed, sampling_seconds = {}, 0.0
    for seed in seeds:
        if seed == seeds[0] or not args.one_draw:
            g = torch.Generator().manual_seed(seed)
            labels = train.labels[torch.randperm(len(train), generator=g)[:args.n_synthetic]]  # real proportions
            start = time.perf_counter()
            synthetic = _synthetic(Path(args.model), labels, args.sampling_steps, args.guidance, seed)
            sampling_seconds += time.perf_counter() - start
        if not torch.isfinite(synthetic).all():
            raise SystemExit(f"{args.model}: the synthetic images contain NaN/inf (seed {seed})")
        classifier, epoch = train_classifier_on_validation(synthetic, labels, 2, ClassifierRecipe(seed=seed),
                                                           (validation.images, validation.labels))
        fake_features = features(extractor, synthetic)
        precision, recall = precision_recall(real_features, fake_features)
        per_seed[seed] = {**evaluate(classifier, test.images, test.labels), "judge_epoch": epoch,
                          "fid": frechet_distance(
            real_features, fake_features), "precision": precision, "recall": recall}
        if seed == seeds[0]:
            order = torch.argsort(labels[:16], stable=True)  # normal first, then pneumonia
            example_grid([Example(image=synthetic[i].numpy(), available=np.ones(1, dtype=bool), label=int(labels[i]))
                          for i in order],
                         train.schema, out / "synthetic_grid.png")
    return {"model": args.model, "n_synthetic": args.n_synthetic, "test_images": len(test),
            "draws": 1 if args.one_draw else len(seeds),
            "sampler": f"ddim {args.sampling_steps} steps, guidance {args.guidance}",
            "sampling_seconds": sampling_seconds, "per_seed": per_seed}


def summarise(per_seed: dict) -> dict:
    """Mean and standard deviation over seeds of every metric."""
    keys = [k for k, v in next(iter(per_seed.values())).items() if isinstance(v, float)]
    return {k: {"mean": float(np.mean([r[k] for r in per_seed.values()])),
                "std": float(np.std([r[k] for r in per_seed.values()])), "n": len(per_seed)} for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the PneumoniaMNIST archive (.npz)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--real", action="store_true", help="the real-data reference (and the feature extractor)")
    parser.add_argument("--model", help="the class-conditional model to judge")
    parser.add_argument("--extractor", help="extractor.pt written by --real")
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--n-synthetic", type=int, default=1000)
    parser.add_argument("--sampling-steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--one-draw", action="store_true",
                        help="draw the synthetic set once (first seed); the seeds then vary only the CNN")
    parser.add_argument("--real-images", type=int, default=0,
                        help="--real: train on this many random real training images (0 = all)")
    args = parser.parse_args()
    archive, out = Path(args.data), Path(args.out)
    if not archive.is_file():
        raise SystemExit(f"{archive}: not found (the PneumoniaMNIST archive; give --data)")
    if not args.real and not (args.model and args.extractor):
        raise SystemExit("give --real, or --model and --extractor")
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.manual_seed(0)
    result = _real_reference(archive, args.resolution, seeds, out, args.real_images) if args.real else \
        _model_quality(args, archive, seeds, out)
    result["summary"] = summarise(result["per_seed"])
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
