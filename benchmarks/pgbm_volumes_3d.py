"""PGBM brain MRI as whole volumes: a 3D latent model at 64 x 64 in-plane with every slice, on a 2-core CPU.

    .venv/bin/python benchmarks/pgbm_volumes_3d.py                         # about 30 min on 2 cores
    .venv/bin/python benchmarks/pgbm_volumes_3d.py --ae-steps 20 --steps 20   # the pipeline only

The archive's slices are put back together per study (22-25 slices each, in the archive's order) and written as
NIfTI volumes (four contrasts as the 4th axis, the tumour mask as the label). Training: the 4 studies of patients
PGBM-001 and PGBM-003. Test: the 3 studies of PGBM-006 and PGBM-008 (pgbm_split.py). The volumes are prepared with
`slices = false`, `resolution = 64` and `depth` (default 32: every slice kept, resampled along the slice axis to a
size the networks can halve), as a site admin would set them in site.toml. Stage 1 is `meddiff
train-autoencoder`, stage 2 `meddiff train --autoencoder`, then `meddiff generate`. The table reports:
- the autoencoder's reconstruction PSNR / SSIM per channel on the test volumes, beside the volume brought down to
  the latent grid and back up by trilinear interpolation (what a pixel model at the latent size could show);
- seconds per generated volume (DDIM, --sampling-steps, all channels): the latent model (sampling and decoding)
  against an untrained pixel model of the same widths on the full grid (speed does not depend on the weights);
- the CPU seconds of both stages.
Results go to --out (results.json, table.md, a sample grid of the middle slices).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import run_meddiff, training_record  # noqa: E402
from pgbm_split import ARCHIVE, TEST_PATIENTS, TRAIN_PATIENTS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONTRASTS = ("t1pre", "t1post", "flair", "t2")


def write_volumes(data_root: Path, out: Path) -> dict[str, Path]:
    """train/ and test/ folders of NIfTI volumes (images/<study>.nii.gz with the contrasts as the 4th axis,
    labels/<study>.nii.gz the tumour mask), one per study of the archive."""
    import nibabel as nib

    source = np.load(Path(data_root) / ARCHIVE)
    studies = np.asarray([str(s) for s in source["study"]])
    folders = {}
    for split, patients in (("train", TRAIN_PATIENTS), ("test", TEST_PATIENTS)):
        folder = out / "data" / split
        folders[split] = folder
        if folder.exists():
            continue
        for sub in ("images", "labels"):
            (folder / sub).mkdir(parents=True)
        for study in dict.fromkeys(s for s in studies if s.split("/")[0] in patients):
            rows = np.flatnonzero(studies == study)
            image = np.stack([source[c][rows].astype(np.float32) for c in CONTRASTS])  # (M, D, H, W)
            mask = source["mask"][rows].astype(np.uint8)  # (D, H, W)
            # read_volume's (X, Y, Z, M) -> (M, Z, Y reversed, X), undone
            nifti_image = np.transpose(image[:, :, ::-1, :], (3, 2, 1, 0))
            nifti_mask = np.transpose(mask[:, ::-1, :], (2, 1, 0))
            name = study.replace("/", "_").replace(" ", "-")
            affine = np.diag([1.0, 1.0, 5.0, 1.0])  # about 1 mm in-plane at 256 px, 5 mm slices
            nib.save(nib.Nifti1Image(np.ascontiguousarray(nifti_image), affine), folder / "images" / f"{name}.nii.gz")
            nib.save(nib.Nifti1Image(np.ascontiguousarray(nifti_mask), affine), folder / "labels" / f"{name}.nii.gz")
    return folders


def site_toml(out: Path, folder: Path, resolution: int, depth: int) -> Path:
    path = out / f"{folder.name}.toml"
    channels = ", ".join(f'"{c}"' for c in (*CONTRASTS, "mask"))
    path.write_text(f'site_id = "{folder.name}"\n[data]\npath = "{folder}"\nchannels = [{channels}]\nslices = false\n'
                    f"resolution = {resolution}\ndepth = {depth}\n")
    return path


def reconstruction_rows(autoencoder: Path, test: Path, config: Path) -> dict:
    """Per channel on the test volumes: the autoencoder's PSNR / SSIM, and trilinear through the latent grid."""
    import torch.nn.functional as F

    from meddiff.common.data.training_set import load_training_set
    from meddiff.common.latent.autoencoder import load_autoencoder
    from meddiff.common.latent.codec import LatentCodec
    from meddiff.common.latent.training import channel_quality, reconstruction_quality
    from meddiff.common.site_config import load_site_config

    codec = LatentCodec(load_autoencoder(autoencoder))
    data = load_training_set(str(test), load_site_config(config).data).tensors
    ours = reconstruction_quality(codec, data)
    small = tuple(codec.latent_size(s) for s in data.spatial)
    through = channel_quality(F.interpolate(F.interpolate(data.images, size=small, mode="area"), size=data.spatial,
                                            mode="trilinear", align_corners=False).clamp(-1, 1), data)
    rows = {name: {"autoencoder": ours[name], "trilinear": through[name]} for name in ours}
    return {"test_volumes": len(data), "grid": list(data.spatial), "latent_grid": list(small), "channels": rows}


def generation_seconds(latent_model: Path, n: int, steps: int) -> dict:
    """Seconds per generated volume: the latent model against an untrained pixel model of its widths."""
    import torch

    from meddiff.common.diffusion.loading import load_model
    from meddiff.common.training.trainer import Trainer
    from meddiff.tasks.synthesis import synthesize

    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model(latent_model, device="cpu", latent_ok=True)
    schema, grid = loaded.schema, loaded.spatial_shape
    condition = torch.zeros(schema.num_channels, *grid)
    given = torch.zeros(schema.num_channels, dtype=torch.bool)
    _, latent = synthesize(loaded, n, None, condition, given, steps=steps, batch_size=n, progress=False)
    trainer = Trainer(schema, loaded.spec, device="cpu")
    pixel = type(loaded)(trainer.denoiser, schema, loaded.resolution, {}, loaded.device, depth=loaded.depth)
    _, pixel_seconds = synthesize(pixel, n, None, condition, given, steps=steps, batch_size=n, progress=False)
    return {"latent": latent / n, "pixel": pixel_seconds / n, "grid": list(grid), "steps": steps, "volumes": n}


def table(results: dict) -> str:
    rec = results["reconstruction"]
    grid, small = " x ".join(map(str, rec["grid"])), " x ".join(map(str, rec["latent_grid"]))
    lines = [f"Autoencoder reconstruction on {rec['test_volumes']} test volumes at {grid} (latent grid {small}):", "",
             "| channel | autoencoder PSNR (dB) / SSIM | trilinear through the latent grid PSNR (dB) / SSIM |",
             "| --- | --- | --- |"]
    for name, row in rec["channels"].items():
        a, b = row["autoencoder"], row["trilinear"]
        lines.append(f"| {name} | {a['psnr_db']:.2f} / {a['ssim']:.3f} | {b['psnr_db']:.2f} / {b['ssim']:.3f} |")
    gen = results["generation"]
    lines += ["", f"| model | seconds per generated volume ({gen['steps']} DDIM steps, {gen['volumes']} volumes) |",
              "| --- | --- |", f"| latent diffusion (sample {small}, decode) | {gen['latent']:.2f} |",
              f"| pixel diffusion at {grid} (untrained, same widths) | {gen['pixel']:.2f} |",
              f"| ratio pixel / latent | {gen['pixel'] / gen['latent']:.1f} |", "",
              f"Stage 1: {results['autoencoder']['steps']} steps in {results['autoencoder']['seconds']:.0f} s; "
              f"stage 2: {results['latent']['steps']} steps in {results['latent']['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MEDDIFF_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default="bench_out/pgbm_volumes_3d")
    parser.add_argument("--resolution", type=int, default=64, help="in-plane size")
    parser.add_argument("--depth", type=int, default=32, help="slices (the studies have 22-25)")
    parser.add_argument("--ae-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=800, help="stage-2 (latent diffusion) steps")
    parser.add_argument("--sampling-steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (Path(args.data) / ARCHIVE).exists():
        print(f"skipped: {Path(args.data) / ARCHIVE} is absent (give --data, the folder of the shared data sets)")
        return 0
    out = Path(args.out).resolve()
    folders = write_volumes(Path(args.data), out)
    configs = {split: site_toml(out, folder, args.resolution, args.depth) for split, folder in folders.items()}
    train = ["--data", str(folders["train"]), "--config", str(configs["train"]), "--seed", str(args.seed)]
    autoencoder = out / "autoencoder" / "autoencoder.pt"
    if not autoencoder.exists():
        run_meddiff(["train-autoencoder", *train, "--out", str(autoencoder.parent), "--steps", str(args.ae_steps),
                     "--batch-size", "2"])
    model = out / "latent" / "model.pt"
    if not model.exists():
        run_meddiff(["train", *train, "--autoencoder", str(autoencoder), "--out", str(model.parent), "--steps",
                     str(args.steps), "--channels", "16,32,32", "--batch-size", "4"])
    run_meddiff(["generate", "--model", str(model), "--out", str(out / "samples"), "--n", "2", "--steps",
                 str(args.sampling_steps), "--no-audit", "--seed", str(args.seed)])
    stage1 = json.loads((autoencoder.parent / "autoencoder.json").read_text())
    results = {"resolution": args.resolution, "depth": args.depth,
               "autoencoder": {k: stage1[k] for k in ("steps", "seconds", "scale", "sha256")},
               "latent": {"steps": training_record(model).get("total_steps"),
                          "seconds": training_record(model).get("seconds")},
               "reconstruction": reconstruction_rows(autoencoder, folders["test"], configs["test"]),
               "generation": generation_seconds(model, 2, args.sampling_steps)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "table.md").write_text(table(results))
    print(table(results), end="")
    print(f"results -> {out / 'results.json'}; samples -> {out / 'samples'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
