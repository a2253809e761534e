"""Experiment 2b: does a public starting model make DP useful? PneumoniaMNIST over the same 3 sites, FedAvg, from
scratch vs from a model pretrained on the JSRT radiographs (public, adult chest X-rays that play no part in the
federation), without DP and at every target epsilon of the budget, and from the public model training only the
norms and attention layers under DP (``[train] trainable = "norms-attention"``).

The steps are built by ``public_start_steps`` (the suite calls it from the pneumonia experiment) and the page's
section by ``public_start_section``; the from-scratch rows are the privacy table's own runs (same judge, seeds).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from quality_report import MISSING, _dp_run_facts, _load, _mean, _pm

JSRT = "jsrt"
PART = "norms-attention"  # the part trained under DP (as DP-LDM fine-tunes attention layers only)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pretrain_files(root: Path, scenario: Path, toml_value) -> tuple[Path, Path]:
    """(site.toml, plan.toml) of the public pretraining: the JSRT images alone (no masks), on the federation's
    network, resolution and batch (read from its ``scenario``), so the federation can start from the model as
    it is."""
    raw = tomllib.loads(scenario.read_text())
    site = _write(root / "public" / "site.toml", 'site_id = "public-jsrt"\n[data]\nchannels = ["image"]\n')
    tables = {"schema": {"channels": ["image"], "resolution": raw["scenario"]["resolution"]},
              "model": raw["model"], "train": {k: v for k, v in raw.get("train", {}).items() if k != "trainable"}}
    text = "\n".join(f"[{name}]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in table.items())
                     for name, table in tables.items())
    return site, _write(root / "public" / "plan.toml", text + "\n")


def public_start_steps(steps: list, step_type, meddiff: str, simulate, evaluate: list[str], data: Path, root: Path,
                       scenarios: dict[str, Path], budget, script) -> None:
    """Append the pretraining and the federated runs that start from it (each with its evaluation)."""
    if not (data / JSRT).exists():
        return
    model_file = root / "public" / "model" / "model.pt"
    done = root / "public" / "model" / "train.json"
    site, plan = scenarios["public-files"]
    info = {"method": f"public pretraining on JSRT ({budget.public_steps} steps)", "kind": "public"}
    steps.append(step_type("pneumonia/public/train", lambda: [meddiff, "train", "--data", str(data / JSRT), "--config",
                                                              str(site), "--plan", str(plan), "--steps",
                                                              str(budget.public_steps), "--out",
                                                              str(model_file.parent)], done, info=info))
    runs = [("public-none", scenarios["fedavg"], [], None, "all")]
    runs += [(f"public-eps-{e:g}", scenarios["dp"], ["--epsilon", f"{e:g}"], e, "all") for e in budget.epsilons]
    runs += [(f"public-{PART}-eps-{e:g}", scenarios["dp-part"], ["--epsilon", f"{e:g}"], e, PART)
             for e in budget.epsilons]
    for name, scenario, extra, epsilon, part in runs:
        run = root / name / "run"
        info = {"method": f"federated from the public model, {part} parameters, "
                          f"{'no DP' if epsilon is None else f'DP epsilon {epsilon:g}'}",
                "kind": "public-start", "epsilon": epsilon, "trainable": part}
        argv = (lambda s=scenario, r=run, x=extra: simulate(s, r, [*x, "--initial-model", str(model_file)]))
        steps.append(step_type(f"pneumonia/{name}/train", argv, run / "report.html", needs=(done,), info=info))
        steps.append(step_type(f"pneumonia/{name}/eval",
                               lambda r=run, n=name: [*script("quality_tstr.py"), "--model", _last_model(r), *evaluate,
                                                      "--out", str(root / n)],
                               root / name / "result.json", needs=(run / "report.html",), info=info))


def _last_model(run: Path) -> str:
    from meddiff.common.jsonl import read_json_lines

    return read_json_lines(run / "registry.jsonl")[-1]["path"]


def _row(root: Path, name: str, start: str, part: str, epsilon: float | None, sites: int,
         reference_fid: float | None) -> tuple[str, dict | None]:
    result = _load(root / name / "result.json")
    s = result and result["summary"]
    facts = _dp_run_facts(root / name / "run", sites) if epsilon is not None else None
    fid = _mean(s, "fid")
    ratio = f"{fid / reference_fid:.2f}x" if fid and reference_fid else MISSING
    spent = f"{facts[0]:.2f}" if facts else ("-" if epsilon is None else MISSING)
    return (f"| {start} | {part} | {'none' if epsilon is None else f'{epsilon:g}'} | {spent} | {_pm(s, 'fid', 1)} | "
            f"{ratio} | {_pm(s, 'precision', 2)} | {_pm(s, 'recall', 2)} | {_pm(s, 'accuracy')} | {_pm(s, 'auc')} |",
            s)


def public_start_section(root: Path, budget: dict) -> list[str]:
    """Section 2b of the page: the table, and each goal read against its figure."""
    if not (root / "public").exists():
        return []
    reference = _mean((_load(root / "fedavg" / "result.json") or {}).get("summary"), "fid")
    lines = ["## 2b. Privacy with a public starting model", "",
             "What is public: the JSRT chest radiographs (247 adult radiographs, a shared data set of the same "
             "modality that plays no part in the federation), on which one model is trained without DP (`meddiff "
             f"train`, {budget.get('public_steps', '?')} steps, the federation's network at 28 px). What is private: "
             "the PneumoniaMNIST images of the 3 sites. Epsilon covers the private data only: the public model is "
             "fixed before the federation starts, and its SHA-256 is in every run's run.json and checkpoint. "
             f"Rows 'from public, {PART}' train only the normalisation and attention layers (plus the first and "
             "last convolution and the class embedding). DP here is per example: MedMNIST names no patients. "
             "FID ratio: against the federated FedAvg run from scratch without DP (table 1).", "",
             "| start | parameters trained | target epsilon | epsilon spent | FID | FID / non-DP | precision | "
             "recall | TSTR accuracy | TSTR AUC |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    summaries = {}
    for epsilon in [None, *budget["epsilons"]]:
        tag = "none" if epsilon is None else f"eps-{epsilon:g}"
        rows = [("scratch", "all", "fedavg" if epsilon is None else tag),
                ("public", "all", f"public-{tag}")]
        if epsilon is not None:
            rows.append(("public", PART, f"public-{PART}-{tag}"))
        for start, part, name in rows:
            line, summaries[(start, part, epsilon)] = _row(root, name, start, part, epsilon, budget["sites"],
                                                           reference)
            lines.append(line)
    return lines + [""] + _goals(summaries, reference) + _caution(root, reference) + [""]


def _caution(root: Path, reference: float | None) -> list[str]:
    """A warning when the non-DP federated reference is itself poor (in the quick budget every round's 40 local
    steps stay inside the 50-step learning-rate warm-up), so that a ratio against it would flatter the DP runs."""
    central = _mean((_load(root / "central" / "result.json") or {}).get("summary"), "fid")
    if not reference or not central or reference <= 2 * central:
        return []
    return ["", f"**Read with care**: the non-DP federated reference (FID {reference:.1f}) is far worse than the "
                f"centralised model trained with the same steps (FID {central:.1f}): the federated model is "
                "undertrained in this budget (each round's local steps may stay inside the learning-rate warm-up). "
                "Ratios against it flatter every other row; read the goals on the full budget only."]


def _goals(summaries: dict, reference: float | None) -> list[str]:
    """The issue's goals, each against the best DP row at that epsilon."""
    def best(epsilon: float) -> tuple[str, dict | None]:
        options = [(f"{start}, {part}", s) for (start, part, e), s in summaries.items() if e == epsilon and s]
        return min(options, key=lambda o: o[1]["fid"]["mean"], default=("", None))

    lines = []
    for epsilon, limit in ((10.0, 1.5), (1.0, 3.0)):
        which, s = best(epsilon)
        if s is None or not reference:
            lines.append(f"- Goal: FID at epsilon {epsilon:g} <= {limit}x the non-DP federated FID -> not measured "
                         "in this budget.")
            continue
        ratio = s["fid"]["mean"] / reference
        lines.append(f"- Goal: FID at epsilon {epsilon:g} <= {limit}x the non-DP federated FID -> {ratio:.2f}x "
                     f"({which}), {'met' if ratio <= limit else 'NOT met'}.")
    which, s = best(10.0)
    if s is not None:
        precision = s["precision"]["mean"]
        lines.append(f"- Goal: precision at epsilon 10 >= 0.7 -> {precision:.2f} ({which}), "
                     f"{'met' if precision >= 0.7 else 'NOT met'}.")
    return lines
