"""docs/RESULTS.md and its figures, written from a quality-suite run directory's result files only.

Every number on the page is read from a file a step of the suite wrote; every table names the steps it comes
from, and each step's command and log are in the run directory (RUN/suite.json, RUN/logs/). A step that did
not complete shows as missing, with the reason, instead of a number.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from meddiff.common.jsonl import read_json_lines  # noqa: E402

MISSING = "missing"
REPO = Path(__file__).resolve().parents[1]
DRAW_ONLY = ("fid", "precision", "recall")  # the same for every CNN seed when the synthetic set is drawn once


def shown(path: Path) -> str:
    """A path as the page shows it: relative to the repository (never this machine's absolute path)."""
    return os.path.relpath(Path(path).resolve(), REPO)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _pm(summary: dict | None, key: str, digits: int = 3) -> str:
    """mean ± std over seeds; the mean alone for one seed, or for a draw-only metric of a one-draw run."""
    if not summary or key not in summary:
        return MISSING
    s = summary[key]
    spread = s["n"] > 1 and not (key in DRAW_ONLY and s["std"] < 1e-6)
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if spread else f"{s['mean']:.{digits}f}"


def _mean(summary: dict | None, key: str) -> float | None:
    return summary[key]["mean"] if summary and key in summary else None


def _copy(source: Path, figures: Path, name: str) -> str | None:
    """Copy a PNG a step wrote into the page's figure folder; the page's relative link to it."""
    if not source.exists():
        return None
    figures.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, figures / name)
    return f"{figures.name}/{name}"


def _mosaic(source: Path, figures: Path, name: str, columns: int = 8) -> str | None:
    """A one-column sample grid (one square tile per image) laid out ``columns`` tiles wide; the page's link."""
    if not source.exists():
        return None
    import numpy as np
    from PIL import Image

    column = np.asarray(Image.open(source))
    size = column.shape[1]
    tiles = [column[i:i + size] for i in range(0, column.shape[0] - size + 1, size)]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    figures.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(figures / name)
    return f"{figures.name}/{name}"


def _steps_line(records: list[dict], prefix: str) -> str:
    mine = [r for r in records if r["step"].startswith(prefix)]
    if not mine:
        return ""
    bad = [f"`{r['step']}` {r['status']}" for r in mine if not r["status"].startswith(("ok", "done"))]
    return (f"Steps `{prefix}*` ({len(mine)}); logs in `logs/` of the run directory." +
            (" **Did not complete:** " + "; ".join(bad) + "." if bad else ""))


def _train_cost(folder: Path) -> str:
    """Steps and seconds of a model: train.json of quality_train.py, or a simulation run's registry."""
    trained = _load(folder / "model" / "train.json")
    if trained:
        return f"{trained['total_steps']} steps, {trained['seconds']:.0f} s"
    rounds = len(read_json_lines(folder / "run" / "registry.jsonl"))
    if rounds:
        metrics = read_json_lines(folder / "run" / "metrics.jsonl")
        replies = [m for r in metrics for m in r.get("train", {}).values()]
        steps, seconds = sum(int(m.get("steps", 0)) for m in replies), sum(m.get("seconds", 0.0) for m in replies)
        return f"{rounds} rounds, {steps} site steps, {seconds:.0f} s at the sites"
    return MISSING


def _dp_run_facts(run: Path, sites: int) -> tuple[float, float, int, int] | None:
    """(largest epsilon any site reported, its delta, site updates aggregated, sites x rounds) of a simulation
    with site DP. A site whose ledger would exceed its budget refuses a round, so it may stop reporting before the
    last round: each site's latest report counts."""
    metrics = read_json_lines(run / "metrics.jsonl")
    if not metrics:
        return None
    latest = {}
    for record in metrics:
        for site, m in record.get("train", {}).items():
            if "epsilon" in m:
                latest[site] = (m["epsilon"], m.get("delta", float("nan")))
    if not latest:
        return None
    updates = sum(len(record.get("train", {})) for record in metrics)
    return (*max(latest.values()), updates, sites * len(metrics))


# -- experiments 1 and 2 ------------------------------------------------------------------------------------------

def _majority_rate(archive: Path) -> float | None:
    """The test accuracy of always answering the test split's most frequent class (what a useless CNN scores)."""
    if not archive.exists():
        return None
    import numpy as np

    labels = np.load(archive)["test_labels"].ravel()
    return float(np.bincount(labels).max() / len(labels))


def _pneumonia(out: Path, budget: dict, records: list[dict], figures: Path, data: Path) -> list[str]:
    root = out / "pneumonia"
    if not root.exists():
        return ["## 1-2. PneumoniaMNIST", "", "Not run in this suite run (see --only), or its data was absent.", ""]
    real = _load(root / "real" / "result.json")
    trained_on = (real or {}).get("trained_on", "real training images (reference not run)")
    total = budget["sites"] * budget["pneumonia_rounds"] * budget["pneumonia_local_steps"]
    rows = [("central", "centralised (3 sites pooled)"), ("fedavg", "federated, FedAvg"),
            ("fedadam", f"federated, FedAdam (server lr {budget['server_learning_rate']:g})")] + [
        (f"site-{k}", f"site-{k} alone") for k in range(budget["sites"])]
    results = {name: _load(root / name / "result.json") for name, _ in rows}
    lines = ["## 1. PneumoniaMNIST: federated vs centralised vs each site alone", "",
             f"3 virtual hospitals, Dirichlet label skew (alpha 0.5) over the MedMNIST train split (28 px), 10 % of "
             f"each site held out. Every model gets {total} optimiser steps of batch 32 (federated: "
             f"{budget['sites']} sites x {budget['pneumonia_rounds']} rounds x {budget['pneumonia_local_steps']} "
             f"local steps), UNet widths {tuple(budget['pneumonia_channels'])}. Judge: the fixed small CNN of "
             f"`meddiff.tasks.classifier` (one recipe) trained on {budget['n_synthetic']} synthetic images drawn "
             f"with the real class proportions (DDIM {budget['sampling_steps']} steps, guidance 2), tested on the "
             f"real test split (624 images). Feature-space metrics use that CNN trained on real training images "
             f"(seed 0; {trained_on}) as extractor: 128-d features after global "
             f"average pooling; FID = Frechet distance of Gaussian "
             f"fits, precision/recall = k-NN manifolds (k=3), synthetic vs the 624 real test images. "
             f"Mean ± std over evaluation seeds {tuple(budget['eval_seeds'])} (the CNN's seed"
             f"{'; one synthetic draw per model' if budget['one_draw'] else ' and the draws'}; the real-data "
             f"reference over seeds {tuple(budget['real_seeds'])}); FID, precision and recall depend on the draw only, "
             f"so with one draw they have no spread. One training "
             f"seed ({budget['seed']}) per model: training each model 3 times does not fit the CPU budget.", "",
             "| model | training | TSTR accuracy | TSTR AUC | FID (CNN features) | precision | recall |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| real data reference (CNN on {trained_on}) | - | "
             f"{_pm(real and real['summary'], 'accuracy')} "
             f"| {_pm(real and real['summary'], 'auc')} | - | - | - |"]
    for name, label in rows:
        s = results[name] and results[name]["summary"]
        lines.append(f"| {label} | {_train_cost(root / name)} | {_pm(s, 'accuracy')} | {_pm(s, 'auc')} | "
                     f"{_pm(s, 'fid', 1)} | {_pm(s, 'precision', 2)} | {_pm(s, 'recall', 2)} |")
    lines += ["", _steps_line(records, "pneumonia/"), ""]
    accuracy = {name: _mean(results[name] and results[name]["summary"], "accuracy") for name, _ in rows}
    singles = {k: v for k, v in accuracy.items() if k.startswith("site-") and v is not None}
    if accuracy["fedavg"] is not None and accuracy["central"] is not None and singles:
        best = max(singles, key=singles.get)
        fed = max((accuracy[k] for k in ("fedavg", "fedadam") if accuracy[k] is not None))
        lines += ["Read against the goals (TSTR accuracy, best federated strategy):", "",
                  f"- federated {fed:.3f} vs centralised {accuracy['central']:.3f}: "
                  f"{100 * (fed - accuracy['central']) / accuracy['central']:+.1f} % "
                  f"(goal: within 5 %, i.e. at most 5 % below) "
                  f"-> {'met' if fed >= 0.95 * accuracy['central'] else 'NOT met'}",
                  f"- federated vs the best single site ({best}, {singles[best]:.3f}): "
                  f"{100 * (fed - singles[best]) / singles[best]:+.1f} % (goal: at least +10 %) -> "
                  f"{'met' if fed >= 1.10 * singles[best] else 'NOT met'}",
                  f"- TSTR accuracy without DP {fed:.3f} (goal >= 0.85) -> {'met' if fed >= 0.85 else 'NOT met'}", ""]
        majority = _majority_rate(data / "medmnist" / "pneumoniamnist.npz")
        useless = [k for k, v in accuracy.items() if v is not None and majority and v <= majority + 0.01]
        if useless:
            lines += [f"**Read with care**: always answering the majority class scores {majority:.3f} on this test "
                      f"split; the CNNs trained on the synthetic data of {', '.join(useless)} score no more: they "
                      f"answer the majority class for (nearly) every test image, so accuracy and the accuracy goals "
                      f"above cannot rank those models; AUC (how well the CNN orders the images) and the "
                      f"feature-space columns still can.", ""]
    grids = [(label, _mosaic(root / name / "synthetic_grid.png", figures, f"pneumonia_{name}.png"))
             for name, label in rows]
    lines += ["Synthetic samples (16 per model, drawn with the first evaluation seed; normal first, then "
              "pneumonia, row by row):", ""]
    for label, link in grids:
        lines += [f"{label}:", "", f"![{label}]({link})", ""] if link else []
    curves = [(_copy(root / "fedavg" / "run" / "figures" / f, figures, f"pneumonia_fedavg_{f}"), f)
              for f in ("train_loss.png", "eval_loss.png")]
    lines += ["", "Per-site curves of the FedAvg run (local training loss, held-out denoising loss):", ""]
    lines += [f"![{f}]({link})" for link, f in curves if link] + [""]
    lines += _privacy(root, budget, accuracy.get("fedavg"), results.get("fedavg"), figures)
    from quality_public import public_start_section  # it reads this module's helpers

    return lines + public_start_section(root, budget)


def _privacy(root: Path, budget: dict, plain: float | None, plain_result: dict | None, figures: Path) -> list[str]:
    lines = ["## 2. Privacy-utility: the federated FedAvg run with example-level DP at each site", "",
             f"DP-SGD (Opacus, per-example clipping, Poisson sampling; K = {budget['dp_noise_multiplicity']} "
             f"(t, noise) draws per example averaged before clipping) at every site, target epsilon per run over all "
             "its rounds, RDP accountant, delta 1/(10 N) per site. It protects each training image of a site against "
             "anyone who sees the weights (the coordinator included); it is not site-level DP. Same budget, metric and "
             "seeds as table 1. A site refuses a round that would take its ledger past the target (the ledger counts "
             "every round the site trained, those of an interrupted attempt before a resume too), so 'site updates' "
             "below sites x rounds means a less trained model.", "",
             "| target epsilon | epsilon spent (largest site) | delta | site updates | TSTR accuracy | TSTR AUC | FID "
             "| precision | recall |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    points = []
    for epsilon in budget["epsilons"]:
        name = f"eps-{epsilon:g}"
        result = _load(root / name / "result.json")
        s = result and result["summary"]
        spent = _dp_run_facts(root / name / "run", budget["sites"])
        lines.append(f"| {epsilon:g} | {f'{spent[0]:.2f}' if spent else MISSING} | "
                     f"{f'{spent[1]:.1e}' if spent else MISSING} | "
                     f"{f'{spent[2]} of {spent[3]}' if spent else MISSING} | {_pm(s, 'accuracy')} | {_pm(s, 'auc')} | "
                     f"{_pm(s, 'fid', 1)} | {_pm(s, 'precision', 2)} | {_pm(s, 'recall', 2)} |")
        if s:
            points.append((epsilon, s["accuracy"]["mean"], s["accuracy"]["std"], s["fid"]["mean"]))
    s = plain_result and plain_result["summary"]
    plain_fid = _mean(s, "fid")
    lines.append(f"| none (no DP) | - | - | - | {_pm(s, 'accuracy')} | {_pm(s, 'auc')} | {_pm(s, 'fid', 1)} | "
                 f"{_pm(s, 'precision', 2)} | {_pm(s, 'recall', 2)} |")
    at_ten = [p for p in points if p[0] == 10.0]
    if at_ten:
        lines += ["", f"Goal: TSTR accuracy >= 0.80 at epsilon 10 -> {at_ten[0][1]:.3f}, "
                      f"{'met' if at_ten[0][1] >= 0.80 else 'NOT met'}."]
    if points and plain is not None and plain_fid:
        flat = max(abs(p[1] - plain) for p in points) <= 0.02
        fid_ratios = [p[3] / plain_fid for p in points]
        if flat and min(fid_ratios) >= 2:
            lines += ["", f"**Read with care**: TSTR accuracy moves by at most 0.02 across epsilon while FID is "
                          f"{min(fid_ratios):.1f}-{max(fid_ratios):.1f}x "
                          "that of the run without DP: the judge CNN still learns the class cue from the noisier "
                          "DP samples (below), so here accuracy does not show the privacy cost; FID and precision do."]
    if points:
        # accuracy alone would hide the cost: the judge CNN still separates blurry classes, FID shows the blur
        fig, (ax, ax_fid) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
        xs, ys, es, fids = zip(*points)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label="example-level DP")
        ax_fid.plot(xs, fids, marker="o", label="example-level DP")
        for axis, value in ((ax, plain), (ax_fid, plain_fid)):
            if value is not None:
                axis.axhline(value, linestyle="--", color="grey", label="no DP")
            axis.set_xscale("log")
            axis.set_xlabel("target epsilon per site (log)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        ax.set(ylabel="TSTR accuracy", title="TSTR accuracy (higher is better)")
        ax_fid.set(ylabel="FID, CNN features", title="FID (lower is better)")
        fig.suptitle("PneumoniaMNIST: privacy vs utility", fontsize=10)
        fig.tight_layout()
        figures.mkdir(parents=True, exist_ok=True)
        fig.savefig(figures / "privacy_utility.png")
        plt.close(fig)
        lines += ["", f"![privacy-utility]({figures.name}/privacy_utility.png)"]
    lines += ["", "Synthetic samples of the DP runs (as above: 16 per model, normal first, then pneumonia):", ""]
    for epsilon in budget["epsilons"]:
        name = f"eps-{epsilon:g}"
        link = _mosaic(root / name / "synthetic_grid.png", figures, f"pneumonia_{name}.png")
        lines += [f"epsilon {epsilon:g}:", "", f"![epsilon {epsilon:g}]({link})", ""] if link else []
    return lines + [""]


# -- experiment 3 -------------------------------------------------------------------------------------------------

def _task_cells(report: dict) -> tuple[str, str, float | None]:
    """(the diffusion method's figure, the baselines' figures, the primary number) of one task report."""
    m, task = report["metrics"], report["task"]
    if task == "segmentation":
        unet = "; ".join(f"UNet ({route}) Dice {r['dice']:.3f}" for route, r in report.get("unet", {}).items())
        return f"Dice {m['dice']:.3f}, HD95 {m['hd95']:.1f} px", unet or "-", m["dice"]
    if task == "anomaly detection":
        return (f"pixel AUROC {m['pixel_auroc']:.3f}, Dice {m['best_dice']:.3f}", "-", m["best_dice"])
    if task == "reconstruction":
        return (f"{m['diffusion']['psnr']:.2f} dB", f"zero-filled {m['zero_filled']['psnr']:.2f} dB, "
                f"TV {m['tv']['psnr']:.2f} dB", m["diffusion"]["psnr"])
    others = "; ".join(f"{k} {v['psnr']:.2f} dB" for k, v in m.items() if k != "diffusion" and "psnr" in v)
    return f"{m['diffusion']['psnr']:.2f} dB", others, m["diffusion"]["psnr"]


def _pgbm(out: Path, budget: dict, records: list[dict], figures: Path, tasks: dict) -> list[str]:
    root = out / "pgbm"
    if not root.exists():
        return ["## 3. PGBM", "", "Not run in this suite run (see --only), or its data was absent.", ""]
    total = budget["sites"] * budget["pgbm_rounds"] * budget["pgbm_local_steps"]
    models = ["federated", "central"] + [f"site-{k}" for k in range(budget["sites"])]
    dp = (root / "federated-dp").exists()
    dp_epsilon = budget.get("pgbm_dp_epsilon", 0)
    lines = ["## 3. PGBM brain MRI: every task, federated vs centralised vs the best single site", "",
             f"Training: every slice of patients PGBM-001 and PGBM-003 (4 studies; the archive has 4 patients), "
             f"split by study over 3 sites with channel skew (site-1 has no t2, site-2 no tumour masks) and a scanner "
             f"intensity shift; {budget['pgbm_resolution']} px, UNet widths {tuple(budget['pgbm_channels'])}, "
             f"{total} optimiser steps of batch 16 per model. Test: {budget['pgbm_test_slices']} slices of patients "
             f"PGBM-006 and PGBM-008 (half with tumour). Best single site = the best of the 3 for each task "
             f"(favours the single sites). One seed ({budget['seed']}); the spread over seeds is not measured "
             f"here.", "",
             "| task | federated | centralised | best single site | classical / supervised baselines (federated run) |"
             + (f" federated, patient-level DP epsilon {dp_epsilon:g} |" if dp else ""),
             "| --- | --- | --- | --- | --- |" + (" --- |" if dp else "")]
    goals, pictures = [], []
    for index, (task, (command, stem)) in enumerate(tasks.items()):
        cells, primary, baselines = {}, {}, "-"
        for model in models:
            report = _load(root / model / f"{index}_{command}" / f"{stem}.json")
            if report:
                cell, base, number = _task_cells(report)
                cells[model], primary[model] = cell, number
                if model == "federated":
                    baselines = base
                    fed_report = report
        singles = {m: primary[m] for m in primary if m.startswith("site-")}
        best = max(singles, key=singles.get) if singles else None
        private = _load(root / "federated-dp" / f"{index}_{command}" / f"{stem}.json") if dp else None
        lines.append(f"| {task} | {cells.get('federated', MISSING)} | {cells.get('central', MISSING)} | "
                     f"{f'{cells[best]} ({best})' if best else MISSING} | {baselines} |"
                     + (f" {_task_cells(private)[0] if private else MISSING} |" if dp else ""))
        if "federated" in cells:
            goals += _goal(command, fed_report)
            link = _copy(root / "federated" / f"{index}_{command}" / f"{stem}.png", figures, f"pgbm_{stem}.png")
            if link:
                pictures += [f"{task}:", "", f"![{task}]({link})", ""]
    if dp:
        facts = _dp_run_facts(root / "federated-dp" / "run", budget["sites"])
        lines += ["", f"The DP column: the same federated run with patient-level DP-SGD at every site (the archive's "
                      f"study ids name the patients: a patient's slices are sampled and clipped together; RDP "
                      f"accountant), target epsilon {dp_epsilon:g}" + (
                          f", largest site's epsilon {facts[0]:.2f} at delta {facts[1]:.1e}, {facts[2]} of {facts[3]} "
                          "site updates aggregated." if facts else ".")]
    lines += ["", _steps_line(records, "pgbm/"), "", "Goals (federated model):", ""] + goals + [""]
    lines += ["Outputs of the federated model (each command's own figure):", ""] + pictures
    return lines


def _goal(command: str, report: dict) -> list[str]:
    m = report["metrics"]
    checks = {"reconstruct": ("reconstruction x4 over zero-filled", "zero_filled", 6.0),
              "denoise": ("denoising over non-local means", "non-local means", 1.5),
              "super-resolve": ("super-resolution x2 over bicubic", "bicubic", 1.5)}
    if command in checks:
        what, baseline, goal = checks[command]
        gain = m["diffusion"]["psnr"] - m[baseline]["psnr"]
        return [f"- {what}: {gain:+.2f} dB (goal +{goal:g} dB) -> {'met' if gain >= goal else 'NOT met'}"]
    if command == "detect-anomalies":
        dice = m["best_dice"]
        return [f"- tumour anomaly Dice {dice:.3f} (goal 0.5) -> {'met' if dice >= 0.5 else 'NOT met'}"]
    return []


# -- experiment 4 -------------------------------------------------------------------------------------------------

def _segmentation(out: Path, records: list[dict], figures: Path) -> list[str]:
    lines = ["## 4. Segmentation: JSRT lungs (synthetic vs real pairs) and hippocampus 3D", ""]
    for name, title in (("jsrt", "JSRT chest X-ray, lung fields"),
                        ("hippocampus", "Medical Decathlon hippocampus, 3D")):
        result = _load(out / name / "results.json")
        if not result:
            lines += [f"{title}: {MISSING} ({_steps_line(records, name) or 'not run'})", ""]
            continue
        seg = result["segment"]
        lines += [f"### {title}", "",
                  f"Diffusion model: {result.get('train_steps')} steps, {result.get('train_seconds', 0):.0f} s, "
                  f"{result.get('resolution')} px; test {seg['examples']} cases. One seed.", "",
                  "| method | Dice | HD95 (px) |", "| --- | --- | --- |",
                  f"| diffusion ensemble | {seg['metrics']['dice']:.3f} | {seg['metrics']['hd95']:.2f} |"]
        lines += [f"| UNet, {route} | {r['dice']:.3f} | {r['hd95']:.2f} |" for route, r in seg.get("unet", {}).items()]
        link = _copy(out / name / "segment" / "segment.png", figures, f"{name}_segment.png")
        lines += ["", _steps_line(records, name)] + (["", f"![{title}]({link})"] if link else []) + [""]
    return lines


def _anomaly(out: Path, records: list[dict]) -> list[str]:
    from anomaly_detection import markdown

    lines = ["## 5. Anomaly detection: healthy-only models, calibrated thresholds, beside a simple baseline", ""]
    result = _load(out / "anomaly" / "results.json")
    if not result:
        return lines + [f"{MISSING} ({_steps_line(records, 'anomaly') or 'not run'})", ""]
    return lines + markdown(result) + [_steps_line(records, "anomaly"), ""]


def _copy_run(out: Path, target: Path) -> None:
    """The run's logs and small result files (JSON, JSON lines) beside the page, so that every number on it can
    be traced to its command and log from the repository too (checkpoints and arrays stay in the run)."""
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if ".flwr" in relative.parts or not path.is_file():
            continue
        if relative.parts[0] == "logs" or path.suffix in (".json", ".jsonl", ".toml"):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)


def write_results(out: Path, page: Path, *, budget: dict, machine: dict, records: list[dict], data: Path,
                  pgbm_tasks: dict) -> Path:
    """Write ``page`` (and its figures beside it, in results/) from the run directory ``out``; ``pgbm_tasks``:
    {task: (command, output stem)} in the order the suite numbered their folders."""
    figures = page.parent / page.stem.lower()  # RESULTS.md: results/, RESULTS-gpu.md: results-gpu/
    if figures.exists():
        shutil.rmtree(figures)  # figures of an earlier run must not sit next to this run's numbers
    failed = [r for r in records if not r["status"].startswith(("ok", "done"))]
    head = ["# Results: does training together beat training alone, and what does privacy cost?", "",
            f"Written by `{machine['command']}` (budget **{budget['name']}**) on {machine['date']}, machine "
            f"`{machine['host']}` ({machine['cpus']} CPUs, "
            f"{machine.get('gpu') or 'no GPU'}; {machine['platform']}, Python "
            f"{machine['python']}); its steps took {sum(r.get('seconds', 0) for r in records) / 60:.1f} min in all "
            f"(a step kept from an earlier run of the same directory counts with its own time). Data: "
            f"`{shown(data)}`. Run directory: `{shown(out)}` (each step's command and log: `suite.json`, `logs/`; a "
            f"copy of the logs and result files is in [{figures.name}/run/]({figures.name}/run/)). Every number "
            "below is read from a result "
            f"file of that run; a step that did not complete shows as '{MISSING}'.", "",
            f"Budget `{budget['name']}` (benchmarks/quality_suite.py `BUDGETS`): "
            + ", ".join(f"{k} {v}" for k, v in budget.items() if k != "name") + ".", ""]
    if budget["name"] == "quick":
        head += ["**This is the quick budget**: minutes of CPU training per model, far from converged. It shows "
                 "that the whole pipeline runs and how the methods rank at a tiny budget; the goals below are "
                 "read against the full budget (`make bench`).", ""]
    if budget.get("early_stopping"):
        head += [f"**Early stopping** (patience {budget['early_stopping']}): every model trained until its held-out "
                 "denoising loss had not improved for that many evaluations (a federation: rounds; a pooled or "
                 "single-site model: one evaluation per federated round's worth of steps), and the best model was "
                 "kept; rounds and steps above are caps. Each row's training cost says what it used. Runs with DP "
                 "at the sites are the exception: they train a fixed number of rounds "
                 f"({budget.get('dp_rounds') or 'the experiment’s'}), because the sites' held-out loss is not "
                 "covered by epsilon and choosing the round on it would use private data outside the guarantee.",
                 ""]
    if budget["name"] == "smoke":
        head += ["**This is the smoke budget**: toy sizes on a CPU, to prove the GPU script and this page. Its "
                 "numbers mean nothing.", ""]
    if failed:
        head += [f"**{len(failed)} steps did not complete**: " + "; ".join(f"`{r['step']}` {r['status']}"
                                                                          for r in failed) + ".", ""]
    body = (_pneumonia(out, budget, records, figures, data) + _pgbm(out, budget, records, figures, pgbm_tasks) +
            _segmentation(out, records, figures) + _anomaly(out, records))
    _copy_run(out, figures / "run")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(head + body) + "\n")
    return page
