"""Anomaly detection on real data: healthy-only models, every method beside the simple baseline, thresholds fixed
on healthy validation images before the test images are seen (issue 25).

    .venv/bin/python benchmarks/anomaly_detection.py                          # all sets (about 2 h on 2 cores)
    .venv/bin/python benchmarks/anomaly_detection.py --sets pneumonia --quick  # a smoke run (minutes)
    .venv/bin/python benchmarks/anomaly_detection.py --sets pneumonia --model pneumonia=RUN/model.pt

Sets (../shared/data, or MEDDIFF_DATA):
- pneumonia: PneumoniaMNIST, trained on the normal images of the train split only (`meddiff train --healthy-class
  normal`), thresholds on the normal images of the val split, tested on the test split (image AUROC for
  pneumonia). MedMNIST names no patients; its splits are the official ones.
- breast: BreastMNIST the same way, healthy = the normal/benign class, anomalous = malignant.
- pgbm: brain MRI, trained on every slice of patients PGBM-001 and -003 with `--healthy-only` (the tumour mask
  decides), thresholds on the model's held-out healthy slices, tested on every slice of patients PGBM-006 and -008
  (pixel AUROC, AUPRC and Dice at the threshold).

Every method runs through meddiff.tasks (what `meddiff detect-anomalies` runs), for ``--seeds`` detector seeds;
the table gives mean and spread over the seeds. The z-score baseline needs no seed. Results: --out/results.json
and the printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import run_meddiff, training_record  # noqa: E402
from pgbm_split import write_split, write_training_with_masks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# anoddpm-simplex: AnoDDPM on a second healthy-only model trained with `--noise simplex` (the noise is the model's)
METHODS = ("anoddpm", "anoddpm-simplex", "multi-depth", "pddpm", "counterfactual")


def _data_root() -> Path:
    return Path(os.environ.get("MEDDIFF_DATA", REPO.parent / "shared" / "data"))


def _medmnist(name: str, classes: tuple[str, str], healthy: str, resolution: int) -> dict:
    archive = _data_root() / "medmnist" / f"{name}.npz"
    lines = f'class_names = {json.dumps(list(classes))}\nresolution = {resolution}\n'
    return {"archive": archive, "train_flags": ["--healthy-class", healthy], "healthy": healthy,
            "healthy_classes": (healthy,),
            "config_lines": lines, "validation": "val", "resolution": resolution}


SETS = {
    "pneumonia": lambda: _medmnist("pneumoniamnist", ("normal", "pneumonia"), "normal", 32),
    "breast": lambda: _medmnist("breastmnist", ("malignant", "normal-benign"), "normal-benign", 32),
    "pgbm": lambda: {"archive": _data_root() / "pgbm", "train_flags": ["--healthy-only"], "healthy": "healthy",
                     "healthy_classes": (),
                     "config_lines": "resolution = 64\n", "validation": "holdout", "resolution": 64},
}


def _config(out: Path, name: str, path: Path, lines: str, split: str = "") -> Path:
    config = out / f"{name}.toml"
    config.write_text(f'[data]\npath = "{path}"\n{lines}' + (f'npz_split = "{split}"\n' if split else ""))
    return config


def _prepare(name: str, spec: dict, out: Path, steps: int, model: Path | None,
             simplex: bool) -> tuple[Path, dict[str, Path]]:
    """(model, {"train", "validation", "test"}: site.toml files): trains the healthy-only model unless given one
    (and its simplex-noise twin in model-simplex/ when ``simplex``)."""
    if name == "pgbm":
        root = spec["archive"].parent
        train_path, test_path = write_training_with_masks(root, out / "split"), write_split(root, out / "split")[1]
        configs = {"train": _config(out, "train", train_path, spec["config_lines"]),
                   "test": _config(out, "test", test_path, spec["config_lines"])}
        configs["validation"] = configs["train"]  # its held-out healthy slices (see _validation)
    else:
        configs = {split: _config(out, split, spec["archive"], spec["config_lines"], npz)
                   for split, npz in (("train", "train"), ("validation", "val"), ("test", "test"))}
    trained = {"model": [], "model-simplex": ["--noise", "simplex"]} if simplex else {"model": []}
    for folder, flags in trained.items():
        path = out / folder / "model.pt"
        if (folder != "model" or model is None) and not path.exists():
            run_meddiff(["train", "--data", _read_path(configs["train"]), "--config", str(configs["train"]),
                         "--out", str(path.parent), "--steps", str(steps), *spec["train_flags"], *flags])
    return model or out / "model" / "model.pt", configs


def _read_path(config: Path) -> str:
    import tomllib

    return tomllib.loads(config.read_text())["data"]["path"]


def _task_data(loaded, config: Path, task: str):
    from meddiff.common.site_config import load_site_config
    from meddiff.tasks.task_data import load_task_data

    return load_task_data(_read_path(config), loaded, load_site_config(config).data, task=task)


def _healthy_training(config: Path, spec: dict):
    """The healthy training examples as `meddiff train --healthy-...` selected them: (train, held out)."""
    from meddiff.client.site_data import HOLDOUT_FRACTION, holdout_split
    from meddiff.common.data.healthy import healthy_only
    from meddiff.common.data.training_set import load_training_set
    from meddiff.common.site_config import load_site_config

    tensors = load_training_set(_read_path(config), load_site_config(config).data, spec["resolution"]).tensors
    return holdout_split(healthy_only(tensors, spec["healthy_classes"]), HOLDOUT_FRACTION)


def _as_task_data(tensors, schema, source: str):
    """Training tensors in the model's channel order, masks left out (nothing to score in healthy images)."""
    from meddiff.client.site_data import align_to_schema
    from meddiff.tasks.task_data import TaskData

    aligned = align_to_schema(tensors, schema)
    available = aligned.available.clone()
    available[:, list(schema.mask_indices)] = False
    return TaskData(aligned.images, available, aligned.labels, None, source)


def _validation(loaded, spec: dict, config: Path):
    """Healthy validation images: the val split's healthy class, or the model's own held-out healthy slices."""
    import torch

    from meddiff.tasks.anomaly import image_truth

    if spec["validation"] == "holdout":
        return _as_task_data(_healthy_training(config, spec)[1], loaded.schema, "held-out healthy training slices")
    data = _task_data(loaded, config, "anomaly-validation")
    truth = image_truth(data, loaded, spec["healthy"])
    return data.subset(torch.nonzero(torch.from_numpy(~truth)).squeeze(1))


DEPTHS = (0.2, 0.35, 0.5, 0.7)
GUIDANCES = (1.0, 3.0, 6.0)


def _choose(loaded, spec: dict, configs: dict[str, Path], settings, images: int) -> dict:
    """Depth (and, for the counterfactual, guidance) chosen by image AUROC on up to ``images`` validation images of
    both kinds; {} where the validation data has no anomalous images (PGBM's held-out slices are all healthy)."""
    import torch

    from meddiff.tasks.anomaly import detect_anomalies, image_truth, keep_scorable
    from meddiff.tasks.metrics import detection_scores

    if spec["validation"] == "holdout" or settings.method == "multi-depth":
        return {}
    data = _task_data(loaded, configs["validation"], "anomaly-selection")
    data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:images])
    data = keep_scorable(data, loaded.schema, settings.channels)[0]
    truth = image_truth(data, loaded, spec["healthy"])
    tried = {}

    def auroc(**change) -> float:
        result = detect_anomalies(loaded, data, replace(settings, **change), seed=2000)
        tried[", ".join(f"{k} {v:g}" for k, v in change.items())] = value = detection_scores(
            result["score"].numpy(), truth)["auroc"]
        return value

    depth = max(DEPTHS, key=lambda d: auroc(depth=d))
    choice = {"depth": depth}
    if settings.method == "counterfactual":
        choice["guidance"] = max(GUIDANCES, key=lambda g: auroc(depth=depth, guidance=g))
    print(f"  chose {choice} for {settings.method} on {len(data)} validation images: {tried}", flush=True)
    return {"settings": choice, "validation_auroc": tried, "validation_images": len(data)}


def _scores(maps, scores, truth_images, masks, thresholds) -> dict:
    from meddiff.tasks.anomaly_thresholds import scores_at_threshold
    from meddiff.tasks.metrics import detection_scores, pixel_scores

    row = {}
    if truth_images is not None and 0 < truth_images.sum() < len(truth_images):
        row.update(detection_scores(scores, truth_images))
    if masks is not None and masks.any():
        row.update(pixel_scores(maps, masks))
    row.update(scores_at_threshold(maps, masks, scores, truth_images, thresholds))
    return row


def _evaluate(name: str, spec: dict, model: Path, configs: dict[str, Path], seeds: int, limit: int, steps: int,
              methods: tuple[str, ...], choose: int = 0, scoring: dict | None = None) -> dict:
    """choose: validation images for choosing each method's depth (0 = the defaults); scoring: AnomalySettings
    residual and channels for every method and the baseline."""
    import torch

    from meddiff.common.diffusion.loading import load_model
    from meddiff.tasks.anomaly import (AnomalySettings, detect_anomalies, image_truth, keep_scorable,
                                       scored_channel_weights)
    from meddiff.tasks.anomaly_baseline import HealthyStatistics, zscore_anomalies
    from meddiff.tasks.anomaly_thresholds import calibrate
    from meddiff.tasks.metrics import to_unit
    from meddiff.tasks.task_data import image_channel_weights

    loaded = load_model(model)
    data, valid = _task_data(loaded, configs["test"], "anomaly-test"), _validation(loaded, spec, configs["validation"])
    if limit:
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit])
        valid = valid.subset(torch.arange(min(limit, len(valid))))
    base = AnomalySettings(steps=steps, healthy_class=spec["healthy"], median=3, batch_size=64, **(scoring or {}))
    # as `meddiff detect-anomalies`: an image with none of the scored channels would get an all-zero map (scored,
    # and calibrated on, as healthy); it is left out and counted instead
    data, _, unscored_test = keep_scorable(data, loaded.schema, base.channels)
    valid, _, unscored_valid = keep_scorable(valid, loaded.schema, base.channels)
    truth = image_truth(data, loaded, spec["healthy"])
    masks = None if data.truth is None else data.truth.numpy()
    rows: dict[str, dict] = {}
    # the baseline: z-scores against the per-pixel statistics of the healthy images the model trained on
    healthy = _as_task_data(_healthy_training(configs["train"], spec)[0], loaded.schema, "healthy training images")
    statistics = HealthyStatistics.of(to_unit(healthy.images), image_channel_weights(healthy, loaded.schema))
    started = time.perf_counter()
    options = {"foreground_level": base.foreground_level, "median": base.median, "smoothing": base.smoothing,
               "top_fraction": base.top_fraction, "residual": base.residual}

    def zscores(images):
        return zscore_anomalies(statistics, images.images, scored_channel_weights(images, loaded.schema, base.channels),
                                present=image_channel_weights(images, loaded.schema), **options)

    on_valid, on_test = zscores(valid), zscores(data)
    thresholds = calibrate(on_valid["map"].numpy(), on_valid["foreground"].numpy(), on_valid["score"].numpy(), 0.05)
    rows["baseline: intensity z-score"] = {"seeds": [_scores(on_test["map"].numpy(), on_test["score"].numpy(),
                                                             truth, masks, thresholds)],
                                           "seconds": time.perf_counter() - started}
    for method in methods:
        if method == "counterfactual" and not loaded.schema.class_names:
            continue
        settings = replace(base, method=method.removesuffix("-simplex"))
        detector = load_model(model.parent.with_name("model-simplex") / "model.pt") if "simplex" in method else loaded
        started, per_seed = time.perf_counter(), []
        chosen = _choose(detector, spec, configs, settings, choose) if choose else {}
        settings = replace(settings, **chosen.get("settings", {}))
        for seed in range(seeds):
            calibration = detect_anomalies(detector, valid, settings, seed=1000 + seed)
            thresholds = calibrate(calibration["map"].numpy(), calibration["foreground"].numpy(),
                                   calibration["score"].numpy(), 0.05)
            result = detect_anomalies(detector, data, settings, seed=seed)
            per_seed.append(_scores(result["map"].numpy(), result["score"].numpy(), truth, masks, thresholds))
            print(f"  {name} {method} seed {seed}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in per_seed[-1].items() if k in ("auroc", "pixel_auroc", "dice_at_threshold")),
                flush=True)
        depth = settings.depth if method != "multi-depth" else "/".join(map(str, settings.depths))
        label = f"{method}, t* {depth}" + (f", guidance {settings.guidance:g}" if method == "counterfactual" else "")
        rows[label + (" (chosen on validation)" if chosen else "")] = {
            "seeds": per_seed, "seconds": time.perf_counter() - started, "chosen": chosen}
    return {"test_images": len(data), "validation_images": len(valid), "residual": base.residual,
            "not_scored": {"test": len(unscored_test), "validation": len(unscored_valid)},
            "scored_channels": list(base.channels) or "every image channel",
            "anomalous_fraction": float(truth.mean()) if truth is not None else None, "rows": rows,
            "model": str(model.relative_to(REPO)) if model.is_relative_to(REPO) else str(model),
            "training": training_record(model)}


def _unscored(result: dict) -> str:
    """The page's words for the images left out for having none of the scored channels ("" for none)."""
    left_out = result.get("not_scored", {})
    if not any(left_out.values()):
        return ""
    return (f" Left out for having none of the scored channels: {left_out.get('test', 0)} test and "
            f"{left_out.get('validation', 0)} validation images.")


def _summary(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


GOALS = {"pneumonia": [("auroc", 0.85, "image AUROC")], "breast": [("auroc", 0.80, "image AUROC")],
         "pgbm": [("pixel_auroc", 0.90, "pixel AUROC"), ("dice_at_threshold", 0.40, "Dice at the threshold")]}
COLUMNS = {"auroc": "image AUROC", "auprc": "image AUPRC", "pixel_auroc": "pixel AUROC",
           "pixel_auprc": "pixel AUPRC", "best_dice": "best Dice (upper bound)",
           "dice_at_threshold": "Dice at threshold", "sensitivity_at_threshold": "sensitivity at threshold",
           "specificity_at_threshold": "specificity at threshold"}
BASELINE = "baseline: intensity z-score"
PAGE_HEAD = ["# Anomaly detection on real data (issue 25)", "",
             "Healthy-only models; thresholds fixed on healthy validation images before the test images are seen; "
             "every method beside the intensity z-score baseline. How: docs/tasks.md, Anomaly detection.", ""]


def markdown(results: dict) -> list[str]:
    """The results as markdown tables, each with its goals and whether each method beats the baseline."""
    lines = []
    for name, result in results["sets"].items():
        rows = result["rows"]
        present = [c for c in COLUMNS if any(c in s for row in rows.values() for s in row["seeds"])]
        seeds = max(len(row["seeds"]) for row in rows.values())
        training = result.get("training", {})
        scored = result.get("scored_channels")
        scored = ", ".join(scored) if isinstance(scored, list) else "all"
        lines += [f"### {name}", "",
                  f"{result['test_images']} test images ({result['anomalous_fraction'] or 0:.0%} anomalous); "
                  f"thresholds set at a false-positive rate of 0.05 on {result['validation_images']} healthy "
                  f"validation images; healthy-only model: {training.get('total_steps', '?')} steps, "
                  f"{training.get('data', {}).get('examples', '?')} healthy training "
                  f"examples; residual scored: {result.get('residual', 'absolute')}, channels scored: "
                  f"{scored}.{_unscored(result)} Mean ± std over {seeds} detector seeds (the baseline has none).",
                  "",
                  "| method | " + " | ".join(COLUMNS[c] for c in present) + " | seconds |",
                  "| --- " * (len(present) + 2) + "|"]
        for method, row in rows.items():
            lines.append(f"| {method} | " + " | ".join(_summary([s[c] for s in row["seeds"]]) for c in present)
                         + f" | {row['seconds']:.0f} |")
        key = "pixel_auroc" if "pixel_auroc" in present else "auroc"
        base = float(np.mean([s[key] for s in rows[BASELINE]["seeds"]])) if BASELINE in rows else None
        lines.append("")
        for column, goal, label in GOALS.get(name, []):
            best = max(((float(np.mean([s[column] for s in row["seeds"]])), method) for method, row in rows.items()
                        if column in row["seeds"][0]), default=None)
            if best:
                lines.append(f"- goal {label} >= {goal}: best {best[0]:.3f} ({best[1]}) -> "
                             f"{'met' if best[0] >= goal else 'NOT met'}")
        if base is not None:
            for method, row in rows.items():
                if method != BASELINE:
                    mean = float(np.mean([s[key] for s in row["seeds"]]))
                    verdict = "beats" if mean > base else "does NOT beat"
                    lines.append(f"- {method} {verdict} the baseline on {COLUMNS[key]} ({mean:.3f} vs {base:.3f})")
        lines.append("")
    return lines


def _print(results: dict) -> None:
    from rich.console import Console

    from meddiff.commands.task_io import print_table

    columns = ("auroc", "auprc", "pixel_auroc", "pixel_auprc", "best_dice", "dice_at_threshold",
               "sensitivity_at_threshold", "specificity_at_threshold")
    for name, result in results["sets"].items():
        present = [c for c in columns if any(c in s for row in result["rows"].values() for s in row["seeds"])]
        table = [(method, *(_summary([s[c] for s in row["seeds"]]) for c in present), f"{row['seconds']:.0f}")
                 for method, row in result["rows"].items()]
        print_table(f"{name}: {result['test_images']} test images ({result['validation_images']} healthy validation "
                    f"images set the thresholds at FPR 0.05); mean ± std over detector seeds",
                    ("method", *(c.replace("_", " ") for c in present), "seconds"), table,
                    Console(width=220, markup=False, highlight=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="pneumonia,breast,pgbm")
    parser.add_argument("--out", default=str(REPO / "bench_out" / "anomaly"))
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each healthy-only model")
    parser.add_argument("--sampler-steps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3, help="detector seeds")
    parser.add_argument("--limit", type=int, default=0, help="test and validation images per set (0 = all)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--model", action="append", default=[], help="SET=PATH: reuse a trained model")
    parser.add_argument("--choose-on", type=int, default=0, metavar="N",
                        help="choose each method's depth (and the counterfactual's guidance) by image AUROC on N "
                             "validation images of both kinds, where the validation split has them (0 = defaults)")
    parser.add_argument("--residual", default="absolute", help="absolute | brighter | darker: the sign scored")
    parser.add_argument("--score-channels", default="", help="comma-separated image channels scored (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 training steps, 16 images, 1 seed")
    parser.add_argument("--page", help="also write the tables as a markdown page here (e.g. docs/RESULTS-anomaly.md)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.limit, args.seeds, args.sampler_steps = 30, 16, 1, 4
    models = dict(item.split("=", 1) for item in args.model)
    out = Path(args.out)
    results = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "command": " ".join(sys.argv[1:]),
               "sets": {}}
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        spec = SETS[name]()
        if not spec["archive"].exists():
            print(f"{name}: skipped, {spec['archive']} is absent (set MEDDIFF_DATA)")
            continue
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        model, configs = _prepare(name, spec, folder, args.steps, Path(models[name]) if name in models else None,
                                  "anoddpm-simplex" in args.methods)
        results["sets"][name] = _evaluate(name, spec, model, configs, args.seeds, args.limit,
                                          args.sampler_steps, tuple(args.methods.split(",")), args.choose_on,
                                          {"residual": args.residual, "channels": tuple(
                                              c for c in args.score_channels.split(",") if c)})
        (out / "results.json").write_text(json.dumps(results, indent=2))
    _print(results)
    if args.page:
        written = [f"Written by `.venv/bin/python benchmarks/anomaly_detection.py {results['command']}` on "
                   f"{results['machine']}, {time.strftime('%Y-%m-%d')}.", ""]
        Path(args.page).write_text("\n".join(PAGE_HEAD + written + markdown(results)))
    print(f"-> {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
