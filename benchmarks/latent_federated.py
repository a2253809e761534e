"""Latent diffusion trained federated on real brain MRI (PGBM, 128 px): both stages in one run, with and without
DP-SGD at the sites, against the same autoencoder trained centrally for the same steps.

    .venv/bin/python benchmarks/latent_federated.py            # about 20 min on 2 cores (measured 19.7)
    .venv/bin/python benchmarks/latent_federated.py --quick    # a few minutes: toy steps, the same table

Three simulated hospitals hold the training patients' studies (pgbm_split.py: PGBM-001 and PGBM-003, one study
per unit; the test patients PGBM-006 and PGBM-008 stay out of every site). `meddiff simulate --stage both` trains
the shared autoencoder (stage 1), computes its latent scale from the sites' latent moments, then the denoiser on
its latents (stage 2), as a coordinator would run it. The table reports, per run:
- the stage-1 autoencoder's reconstruction PSNR / SSIM on the test patients, per channel;
- the latent scale, the seconds of each stage, and each site's epsilon after each stage (from its ledger);
- a translation score of the stage-2 model (t1pre, t1post, flair -> t2 on the test patients, 128 px).
The centralised row trains `meddiff train-autoencoder` on all training slices for the same number of steps as
one site trains in stage 1 (so it sees as many images as the federation's average site). The DP run protects each
example (a slice's contrasts and mask together): with one or two studies a site, a per-patient unit would leave a
site one or two units.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import run_meddiff  # noqa: E402
from latent_pgbm import RESOLUTION, reconstruction_rows  # noqa: E402
from pgbm_split import write_split, write_training_by_study  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHANNELS = ("t1pre", "t1post", "flair", "t2", "mask")


def scenario_text(data: Path, args: argparse.Namespace, dp: bool) -> str:
    # per example: with one or two studies a site, a per-patient unit would leave a site one or two units
    privacy = ("\n[privacy]\nenabled = true\ntarget_epsilon = 10.0\nnoise_multiplicity = 1\nunit = \"example\"\n"
               if dp else "")
    return f"""name = "pgbm-latent"
[scenario]
data = "{data}"
sites = 3
split = "iid"
scanner_shift = false
resolution = {RESOLUTION}
holdout = 0.1
[federation]
rounds = {args.rounds}
local_steps = {args.local_steps}
min_sites = 3
tracking = "off"
[autoencoder]
rounds = {args.autoencoder_rounds}
local_steps = {args.autoencoder_steps}
batch_size = 8
[train]
batch_size = 16
{privacy}"""


def ledger_rows(run: Path) -> dict:
    """Each site's epsilon after stage 1 and after both stages (the last released row of each)."""
    from meddiff.privacy.ledger import PrivacyLedger

    sites = {}
    for path in sorted((run / "privacy").glob("site-*.sqlite")):
        released = [e for e in PrivacyLedger(path).entries() if e["status"] == "released"]
        first = [e for e in released if e["run"].endswith("/autoencoder")]
        second = [e for e in released if not e["run"].endswith("/autoencoder")]
        sites[path.stem] = {"stage 1": first[-1]["epsilon_total"] if first else None,
                            "both stages": second[-1]["epsilon_total"] if second else None,
                            "delta": released[-1]["delta"] if released else None, "unit": released[-1]["unit"]
                            if released else None}
    return sites


def stage_seconds(run: Path) -> dict:
    rounds = lambda folder: [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    return {"stage 1": sum(r["seconds"] for r in rounds(run / "autoencoder")),
            "stage 2": sum(r["seconds"] for r in rounds(run))}


def translation(model: Path, test: Path, out: Path, limit: int) -> dict:
    run_meddiff(["translate", "--model", str(model), "--data", str(test), "--from", "t1pre,t1post,flair", "--to", "t2",
                 "--limit", str(limit), "--samples", "1", "--steps", "25", "--out", str(out)])
    return json.loads((out / "translate.json").read_text())["metrics"]["diffusion"]


def federated(data: Path, test: Path, out: Path, args: argparse.Namespace, dp: bool) -> dict:
    name = "federated-dp" if dp else "federated"
    (out / f"{name}.toml").write_text(scenario_text(data, args, dp))
    run = out / name
    started = time.perf_counter()
    run_meddiff(["simulate", str(out / f"{name}.toml"), "--stage", "both", "--out", str(run)])
    seconds = time.perf_counter() - started
    stage_one = [json.loads(line) for line in (run / "autoencoder" / "registry.jsonl").read_text().splitlines()]
    autoencoder = Path(stage_one[-1]["path"])
    registry = [json.loads(line) for line in (run / "registry.jsonl").read_text().splitlines()]
    from meddiff.common.latent.autoencoder import load_autoencoder

    return {"seconds": seconds, "stages": stage_seconds(run), "scale": load_autoencoder(autoencoder).scale,
            "reconstruction": reconstruction_rows(autoencoder, test),
            "privacy": ledger_rows(run) if dp else None,
            "translation": translation(Path(registry[-1]["path"]), test, out / f"{name}-translate", args.limit)}


def centralised(train: Path, test: Path, out: Path, args: argparse.Namespace) -> dict:
    folder = out / "centralised"
    started = time.perf_counter()
    run_meddiff(["train-autoencoder", "--data", str(train), "--out", str(folder), "--resolution", str(RESOLUTION),
                 "--steps", str(args.autoencoder_rounds * args.autoencoder_steps), "--batch-size", "8"])
    seconds = time.perf_counter() - started
    from meddiff.common.latent.autoencoder import load_autoencoder

    path = folder / "autoencoder.pt"
    return {"seconds": seconds, "scale": load_autoencoder(path).scale,
            "reconstruction": reconstruction_rows(path, test)}


def table(results: dict) -> str:
    lines = ["| autoencoder | " + " | ".join(f"{c} PSNR / SSIM" for c in CHANNELS) + " | latent scale | seconds |",
             "| --- |" + " --- |" * (len(CHANNELS) + 2)]
    for name, row in results["runs"].items():
        channels = row["reconstruction"]["channels"]
        cells = [f"{channels[c]['autoencoder']['psnr_db']:.2f} / {channels[c]['autoencoder']['ssim']:.3f}"
                 if c in channels else "-" for c in CHANNELS]
        seconds = row["stages"]["stage 1"] if "stages" in row else row["seconds"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['scale']:.3f} | {seconds:.0f} |")
    lines += ["", "| run | site | epsilon after stage 1 | epsilon after both stages | delta | unit |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, row in results["runs"].items():
        for site, p in (row.get("privacy") or {}).items():
            lines.append(f"| {name} | {site} | {p['stage 1']:.2f} | {p['both stages']:.2f} | {p['delta']:.2g} | "
                         f"{p['unit']} |")
    lines += ["", "| run | stage 2 translation t2 PSNR (dB) | SSIM | stage 1 s | stage 2 s |",
              "| --- | --- | --- | --- | --- |"]
    for name, row in results["runs"].items():
        if "translation" in row:
            m = row["translation"]
            lines.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                         f"{row['stages']['stage 1']:.0f} | {row['stages']['stage 2']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default="bench_out/latent_federated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=100)
    parser.add_argument("--autoencoder-rounds", type=int, default=3)
    parser.add_argument("--autoencoder-steps", type=int, default=50)
    parser.add_argument("--limit", type=int, default=24, help="test slices translated")
    parser.add_argument("--quick", action="store_true", help="toy steps: checks the pipeline, not the figures")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.local_steps, args.autoencoder_rounds, args.autoencoder_steps, args.limit = 1, 5, 1, 5, 2
    root = Path(args.data_root)
    if not root.is_dir():
        print(f"PGBM data not found at {args.data_root}: pass --data-root (see ../shared/data/README.md)")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    train = write_training_by_study(root, data)
    _, test = write_split(root, data)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "settings": {k: v for k, v in vars(args).items()}, "runs": {}}
    results["runs"]["centralised (one site, all training slices)"] = centralised(train, test, out, args)
    results["runs"]["federated, 3 sites"] = federated(train, test, out, args, dp=False)
    results["runs"]["federated, 3 sites, DP-SGD epsilon 10"] = federated(train, test, out, args, dp=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
