"""Latent diffusion on real brain MRI (PGBM) at 128 px: what the autoencoder keeps, and what a latent model costs.

    .venv/bin/python benchmarks/latent_pgbm.py --train-pixel 64   # about 50 min on 2 cores (measured 51)
    .venv/bin/python benchmarks/latent_pgbm.py --quick    # a few minutes: toy steps, the same table

Stage 1 (`meddiff train-autoencoder`) and stage 2 (`meddiff train --autoencoder`) run as a site admin runs them,
on every slice of the training patients PGBM-001 and PGBM-003 (contrasts and tumour mask, 128 px); the test
patients PGBM-006 and PGBM-008 play no part in training (pgbm_split.py). The table reports:
- the autoencoder's reconstruction PSNR / SSIM per channel on the test patients, beside the same image brought
  down to the latent grid's size (32 px) and back up with bicubic interpolation: what a pixel model at 32 px
  could at best show at 128 px;
- seconds per generated 128 px image (DDIM, 50 steps, all channels): the latent model (sampling and decoding)
  against a pixel model of the same UNet widths at 128 px and at 64 px. Speed does not depend on the weights, so
  the pixel models are timed untrained;
- translation (t1pre, t1post, flair -> t2) and x4 reconstruction of t2, scored at 128 px, beside a pixel model
  (--train-pixel PX trains one at PX for the latent model's CPU time; --pixel-model reuses one);
- a sample grid of the latent model (`meddiff generate`).
Results go to --out (results.json, table.md, the grid).
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
RESOLUTION = 128


def reconstruction_rows(autoencoder: Path, test_npz: Path) -> dict:
    """Per channel on the test patients: the autoencoder's PSNR / SSIM and bicubic through the latent grid."""
    import torch.nn.functional as F

    from meddiff.common.data.training_set import load_training_set
    from meddiff.common.latent.autoencoder import load_autoencoder
    from meddiff.common.latent.codec import LatentCodec
    from meddiff.common.latent.training import channel_quality, reconstruction_quality

    codec = LatentCodec(load_autoencoder(autoencoder))
    data = load_training_set(str(test_npz), resolution=RESOLUTION).tensors
    ours = reconstruction_quality(codec, data)
    small = codec.latent_size(RESOLUTION)
    bicubic = F.interpolate(F.interpolate(data.images, size=(small, small), mode="area"), size=(RESOLUTION,) * 2,
                            mode="bicubic", align_corners=False).clamp(-1, 1)
    through = channel_quality(bicubic, data)
    rows = {name: {"autoencoder": ours[name], "bicubic": through[name]} for name in ours}
    return {"test_slices": len(data), "latent_size": small, "channels": rows}


def generation_seconds(latent_model: Path, n: int, steps: int) -> dict:
    """Seconds per generated image: the latent model at 128 px against untrained pixel models of its widths."""
    import torch

    from meddiff.common.diffusion.loading import load_model
    from meddiff.common.training.trainer import Trainer
    from meddiff.tasks.synthesis import synthesize

    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model(latent_model, device="cpu", latent_ok=True)
    schema = loaded.schema
    condition, given = torch.zeros(schema.num_channels, RESOLUTION, RESOLUTION), torch.zeros(schema.num_channels,
                                                                                              dtype=torch.bool)
    timings = {}
    _, seconds = synthesize(loaded, n, None, condition, given, steps=steps, batch_size=n, progress=False)
    timings[f"latent {RESOLUTION} px (sample {loaded.codec.latent_size(RESOLUTION)} px + decode)"] = seconds / n
    for size in (RESOLUTION, RESOLUTION // 2):
        trainer = Trainer(schema, loaded.spec, device="cpu")
        pixel = type(loaded)(trainer.denoiser, schema, size, {}, loaded.device)
        _, seconds = synthesize(pixel, n, None, condition[:, :size, :size], given, steps=steps, batch_size=n,
                                progress=False)
        timings[f"pixel {size} px"] = seconds / n
    return timings


def task_scores(model: Path, test_npz: Path, limit: int, seed: int = 0) -> dict:
    """Translation (t1pre, t1post, flair -> t2) and x4 reconstruction of t2 on the first ``limit`` test slices,
    scored at 128 px in [0, 1] units. A model of a smaller size works on the slices at its size (k-space: the
    central lines of its size); its result is brought to 128 px by bicubic interpolation before scoring."""
    import torch
    import torch.nn.functional as F

    from meddiff.common.data.training_set import load_training_set
    from meddiff.common.diffusion.loading import load_model
    from meddiff.tasks import reconstruct as rec
    from meddiff.tasks.metrics import image_quality, to_unit
    from meddiff.tasks.settings import ReconstructSettings, TranslateSettings
    from meddiff.tasks.translate import translate

    loaded = load_model(model, device="cpu", latent_ok=True)
    size, schema = loaded.resolution, loaded.schema
    truth = load_training_set(str(test_npz), resolution=RESOLUTION).tensors
    data = truth if size == RESOLUTION else load_training_set(str(test_npz), resolution=size).tensors
    rows = torch.arange(min(limit, len(truth)))
    truth, data = truth.subset(rows), data.subset(rows)
    target = schema.index("t2")
    given = torch.zeros(len(data), schema.num_channels, dtype=torch.bool)
    given[:, [schema.index(c) for c in ("t1pre", "t1post", "flair")]] = True
    up = (lambda x: x) if size == RESOLUTION else (
        lambda x: F.interpolate(x[:, None], size=(RESOLUTION,) * 2, mode="bicubic", align_corners=False)[:, 0])
    reference = to_unit(truth.images[:, target])[:, None]
    start = time.perf_counter()
    translated, _ = translate(loaded, data.images, given, target, TranslateSettings(samples=2, steps=20), seed)
    seconds = time.perf_counter() - start
    scores = {"translate t2": {**image_quality(to_unit(up(translated))[:, None], reference), "seconds": seconds}}
    unit = to_unit(data.images[:, target])
    mask = rec.expand_mask(rec.cartesian_mask(size, 4, seed=seed), (size, size))
    kspace = rec.fft2c(unit.to(torch.complex64)) * mask
    start = time.perf_counter()
    rebuilt = rec.reconstruct(loaded, kspace, mask, target, settings=ReconstructSettings(steps=20), seed=seed).abs()
    scores["reconstruct t2 x4"] = {**image_quality(up(rebuilt).clamp(0, 1)[:, None], reference),
                                   "seconds": time.perf_counter() - start}
    scores["reconstruct t2 x4, zero-filled"] = image_quality(
        up(rec.zero_filled(kspace, mask).abs()).clamp(0, 1)[:, None], reference)
    return {"resolution": size, "slices": len(data), "scores": scores}


def equal_time_pixel_model(train_npz: Path, folder: Path, size: int, autoencoder: Path, latent: Path) -> Path:
    """A pixel model at ``size`` trained for the seconds both latent stages took: 30 steps measure its pace here,
    then it resumes to the step count that fills the rest."""
    model = folder / "model.pt"
    if model.exists():
        return model
    budget = json.loads((autoencoder.parent / "autoencoder.json").read_text())["seconds"] + \
        training_record(latent)["seconds"]
    probe = 30
    run_meddiff(["train", "--data", str(train_npz), "--resolution", str(size), "--steps", str(probe), "--out",
                 str(folder)])
    pace = training_record(model)["seconds"] / probe
    run_meddiff(["train", "--data", str(train_npz), "--resume", "--steps", str(max(probe, int(budget / pace))),
                 "--out", str(folder)])
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MEDDIFF_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default="bench_out/latent_pgbm")
    parser.add_argument("--ae-steps", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=2500, help="stage-2 (latent diffusion) steps")
    parser.add_argument("--quick", action="store_true", help="toy steps (40 and 40): the pipeline, not the figures")
    parser.add_argument("--n", type=int, default=8, help="images per generation timing")
    parser.add_argument("--task-slices", type=int, default=24, help="test slices for translation and reconstruction")
    parser.add_argument("--pixel-model", help="a pixel model (e.g. 64 px, trained as long) to score beside it")
    parser.add_argument("--train-pixel", type=int, default=0, metavar="PX",
                        help="train a pixel model at PX for the latent model's CPU time (both stages) and score it")
    args = parser.parse_args()
    if not (Path(args.data) / "pgbm").exists():
        print(f"skipped: {Path(args.data) / 'pgbm'} is absent (give --data, the folder of the shared data sets)")
        return 0
    if args.quick:
        args.ae_steps, args.steps = 40, 40
    out = Path(args.out)
    train_npz = write_training_with_masks(Path(args.data), out / "data")
    test_npz = write_split(Path(args.data), out / "data")[1]
    autoencoder, model = out / "autoencoder" / "autoencoder.pt", out / "latent" / "model.pt"
    if not autoencoder.exists():
        run_meddiff(["train-autoencoder", "--data", str(train_npz), "--resolution", str(RESOLUTION), "--steps",
                     str(args.ae_steps), "--out", str(autoencoder.parent)])
    if not model.exists():
        run_meddiff(["train", "--data", str(train_npz), "--autoencoder", str(autoencoder), "--steps",
                     str(args.steps), "--out", str(model.parent)])
    if args.train_pixel and not args.pixel_model:
        args.pixel_model = str(equal_time_pixel_model(train_npz, out / f"pixel{args.train_pixel}", args.train_pixel,
                                                      autoencoder, model))
    run_meddiff(["generate", "--model", str(model), "--n", "16", "--audit-data", str(train_npz), "--out",
                 str(out / "samples")])
    stage1 = json.loads((autoencoder.parent / "autoencoder.json").read_text())
    summary = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "date": time.strftime("%Y-%m-%d"),
               "train_patients": TRAIN_PATIENTS, "test_patients": TEST_PATIENTS, "resolution": RESOLUTION,
               "stage1": {k: stage1[k] for k in ("steps", "seconds", "scale", "sha256")},
               "stage2": {k: training_record(model).get(k) for k in ("total_steps", "seconds", "images_per_second")},
               "reconstruction": reconstruction_rows(autoencoder, test_npz),
               "seconds_per_image": generation_seconds(model, args.n, 50),
               "tasks": {"latent": task_scores(model, test_npz, args.task_slices)}}
    if args.pixel_model:
        summary["tasks"]["pixel"] = task_scores(Path(args.pixel_model), test_npz, args.task_slices)
        summary["tasks"]["pixel"]["model"] = args.pixel_model
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    console = Console(width=160)
    recon = Table(title=f"PGBM test patients {TEST_PATIENTS} at {RESOLUTION} px: autoencoder "
                        f"({summary['stage1']['steps']} steps) vs bicubic through "
                        f"{summary['reconstruction']['latent_size']} px")
    for column in ("channel", "autoencoder PSNR (dB)", "autoencoder SSIM", "bicubic PSNR (dB)", "bicubic SSIM"):
        recon.add_column(column, justify="left" if column == "channel" else "right")
    lines = ["| channel | autoencoder PSNR (dB) | autoencoder SSIM | bicubic PSNR (dB) | bicubic SSIM |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in summary["reconstruction"]["channels"].items():
        cells = [name, f"{row['autoencoder']['psnr_db']:.2f}", f"{row['autoencoder']['ssim']:.3f}",
                 f"{row['bicubic']['psnr_db']:.2f}", f"{row['bicubic']['ssim']:.3f}"]
        recon.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    speed = Table(title="seconds per generated image (DDIM 50 steps, all channels, CPU)")
    for column in ("model", "s / image", "vs pixel 128 px"):
        speed.add_column(column, justify="left" if column == "model" else "right")
    lines += ["", "| model | s / image | speed-up vs pixel 128 px |", "| --- | --- | --- |"]
    pixel128 = summary["seconds_per_image"][f"pixel {RESOLUTION} px"]
    for name, seconds in summary["seconds_per_image"].items():
        cells = [name, f"{seconds:.3f}", f"{pixel128 / seconds:.1f}x"]
        speed.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    tasks = Table(title=f"tasks on {args.task_slices} test slices, scored at {RESOLUTION} px ([0, 1] units)")
    for column in ("task", "model", "PSNR (dB)", "SSIM", "seconds"):
        tasks.add_column(column, justify="left" if column in ("task", "model") else "right")
    lines += ["", "| task | model | PSNR (dB) | SSIM | seconds |", "| --- | --- | --- | --- | --- |"]
    for kind, result in summary["tasks"].items():
        for name, row in result["scores"].items():
            cells = [name, f"{kind} {result['resolution']} px", f"{row['psnr']:.2f}", f"{row['ssim']:.3f}",
                     f"{row['seconds']:.0f}" if "seconds" in row else "-"]
            tasks.add_row(*cells)
            lines.append("| " + " | ".join(cells) + " |")
    console.print(recon)
    console.print(speed)
    console.print(tasks)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"results -> {out / 'results.json'}, {out / 'table.md'}, {out / 'samples' / 'grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
