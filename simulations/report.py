"""The run report: one HTML page with the data split per site, loss curves per site and sample grids.

Everything is read from the run directory (metrics.jsonl, registry.jsonl, sites.json, checkpoints), so a
report can be rebuilt for any run, also one that was resumed.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..common import messages  # noqa: E402
from ..common.diffusion.loading import load_model  # noqa: E402
from ..common.grid import example_grid  # noqa: E402
from ..common.schema import Example  # noqa: E402
from ..privacy.ledger import PrivacyLedger  # noqa: E402
from ..server.central_dp import describe  # noqa: E402
from ..server.progress import site_name  # noqa: E402
from ..server.run_store import RunStore  # noqa: E402
from ..tasks.synthesis import synthesize  # noqa: E402


def _curves(rounds: list[dict], section: str, key: str) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = {}
    for entry in rounds:
        for node, metrics in entry.get(section, {}).items():
            if key in metrics:
                curves.setdefault(site_name(metrics, node), []).append((entry["round"], metrics[key]))
    return dict(sorted(curves.items()))


def _plot(curves: dict, title: str, ylabel: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    for name, points in curves.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=name)
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _samples(checkpoint: str, path: Path, n: int = 8, steps: int = 25) -> Path:
    """A grid of ``n`` samples (pixel or latent model: tasks/synthesis.py decodes a latent one)."""
    loaded = load_model(checkpoint, device="cpu", latent_ok=True)
    c = loaded.schema.num_channels
    labels = torch.arange(n) % loaded.schema.num_classes if loaded.schema.num_classes else None
    images = synthesize(loaded, n, labels, torch.zeros(c, *loaded.spatial_shape), torch.zeros(c, dtype=torch.bool), steps=steps,
                        progress=False)[0].numpy()
    classes = labels.tolist() if labels is not None else [None] * n
    return example_grid([Example(image=x, available=np.ones(c, dtype=bool), label=k) for x, k in zip(images, classes)],
                        loaded.schema, path)


def _privacy_units(rounds: list[dict]) -> str:
    """Which unit the sites' DP protected, from the metrics they sent ("patient-level", "example-level", or both
    named per site when they differ)."""
    kinds = {site: "patient-level" if m.get("dp-patient-level") else "example-level"
             for r in rounds for site, m in r["train"].items() if "epsilon" in m}
    if len(set(kinds.values())) <= 1:
        return next(iter(kinds.values()), "example-level")
    return "mixed (" + ", ".join(f"{site}: {kind}" for site, kind in sorted(kinds.items())) + ")"


def _privacy_section(run_dir: Path, rounds: list[dict], registry: list[dict], figures: Path) -> str:
    """The privacy paragraphs: DP-SGD at the sites (per patient or per example), site-level DP at the server, each
    stated exactly."""
    privacy = ""
    epsilon_curves = _curves(rounds, "train", "epsilon")
    if epsilon_curves:
        figure = _plot(epsilon_curves, "DP-SGD epsilon per site (total after the round)", "epsilon",
                       figures / "epsilon.png")
        last = {site: points[-1][1] for site, points in sorted(epsilon_curves.items())}
        deltas = sorted({m["delta"] for r in rounds for m in r["train"].values() if "delta" in m})
        accountants = sorted({e["accountant"].upper() for path in sorted((run_dir / "privacy").glob("*.sqlite"))
                              for e in PrivacyLedger(path).entries()}) or ["unknown"]
        units = _privacy_units(rounds)
        privacy = (f"<h2>Privacy</h2><p>{units.capitalize()} differential privacy at each site (DP-SGD, Opacus, "
                   f"per-unit clipping, Poisson sampling), {'/'.join(accountants)} accountant, delta "
                   f"{', '.join(f'{d:.2g}' for d in deltas)} (1/(10 N) for N protected units per site unless set). "
                   f"Epsilon after the last round: {html.escape(', '.join(f'{k} {v:.3f}' for k, v in last.items()))}. "
                   f"It protects each {'patient' if units.startswith('patient') else 'training image'} of a site "
                   "against everyone who sees the weights; it is not site-level DP.</p>"
                   f"<img src='figures/{figure.name}'>")
    site_level = [(e["round"], e["central_dp"]) for e in registry if "central_dp" in e and "early_stopping" not in e]
    if site_level:
        figure = _plot({"federation": [(r, d["epsilon"]) for r, d in site_level]},
                       "site-level DP epsilon at the server (total after the round)", "epsilon",
                       figures / "epsilon_site_level.png")
        privacy += (f"<h2>Site-level privacy</h2><p>{html.escape(describe(site_level[-1][1]))}. It protects whether "
                    f"any one site (all of its images at once) took part, against everyone who sees the global "
                    f"models.</p><img src='figures/{figure.name}'>")
    return privacy


def _tables(run_dir: Path, rounds: list[dict]) -> tuple[str, str]:
    """The HTML rows of the per-site data table and the per-round table."""
    sites = json.loads((run_dir / "sites.json").read_text()) if (run_dir / "sites.json").exists() else []
    rows = "".join(
        f"<tr><td>{html.escape(s['site'])}</td><td>{s['train']}</td><td>{s['holdout']}</td>"
        f"<td>{html.escape(json.dumps(s['labels']))}</td><td>{html.escape(', '.join(s['channels']))}</td>"
        f"<td>{html.escape(', '.join(s['missing']) or '-')}</td></tr>" for s in sites)
    round_rows = "".join(
        f"<tr><td>{r['round']}</td><td>{r['seconds']:.1f}</td><td>{len(r['train'])}</td><td>{len(r['rejected'])}</td>"
        f"<td>{html.escape('; '.join(str(x['node']) + ': ' + x['reason'] for x in r['rejected'])) or '-'}</td></tr>"
        for r in rounds)
    return rows, round_rows


def _stopping(registry: list[dict], stopped: dict | None = None) -> str:
    """A sentence on early stopping, when the run used it: which round's model is the run's, and why; or on a
    run that ended before its last round (``stopped``: RUN_DIR/stopped.json)."""
    stopping = registry[-1].get("early_stopping") if registry else None
    if not stopping:
        return f" The run ended after round {stopped['after_round']}: {stopped['why']}." if stopped else ""
    why = (f"the held-out loss had not improved for {stopping['patience']} evaluations" if stopping["stopped"]
           else "the next round would have passed the site-level DP budget, dp_max_epsilon"
           if stopping.get("privacy_budget_reached") else "the cap of rounds was reached")
    return (f" Early stopping after round {stopping['at_round']} ({why}): the run's model is round "
            f"{stopping['best_at']}'s, held-out loss {stopping['best_loss']:.4f}.")


def _sample_grids(registry: list[dict], sample_every: int, figures: Path) -> str:
    chosen = [e for e in registry if sample_every and e["round"] % sample_every == 0]
    if registry and registry[-1] not in chosen:
        chosen.append(registry[-1])
    grids = [(e["round"], _samples(e["path"], figures / f"samples_round{e['round']:04d}.png")) for e in chosen]
    return "".join(f"<figure><img src='figures/{p.name}'><figcaption>round {r}: EMA model, DDIM 25 steps, one row "
                   "per sample (labelled with its class), one column per channel (named above it)</figcaption>"
                   "</figure>" for r, p in grids)


def _start_paragraph(run_dir: Path, rounds: list[dict]) -> str:
    """Where round 1 started (a model file and its SHA-256, or scratch) and how much of the network trained."""
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    initial = run.get("initial_model")
    if initial:
        added = initial["added_channels"]
        added = f"; channels added untrained: {', '.join(added)}" if added else ""
        start = (f"Round 1 started from the model {initial['file']} (sha256 {initial['sha256']}; channels kept: "
                 f"{', '.join(initial['kept_channels']) or 'none'}{added}).")
    else:
        start = "Round 1 started from a fresh initialisation (the run's seed)."
    trained = sorted({int(m["trained-parameters"]) for r in rounds for m in r["train"].values()
                      if "trained-parameters" in m})
    recipe = json.loads(run.get("spec", {}).get(messages.RECIPE, "{}"))
    part = recipe.get("trainable", "all")
    if trained:
        start += f" Sites trained {part} ({', '.join(f'{n:,}' for n in trained)} parameters)."
    return f"<p>{html.escape(start)}</p>"


def _latent_paragraph(run: dict) -> str:
    """For a latent run: which autoencoder its sites encoded their images with."""
    latent = run.get("spec", {}).get(messages.LATENT)
    if not latent:
        return ""
    record = json.loads(latent)
    trained = record.get("record", {})
    where = (f"trained federated in stage 1, {trained.get('round')} rounds"
             if trained.get("federated") else "a stored stage-1 file")
    line = (f"Latent diffusion: the sites trained the denoiser on the latents of autoencoder sha256 "
            f"{str(record.get('sha256', ''))[:16]}... ({where}); latent scale {float(record.get('scale', 1.0)):.4g}.")
    return f"<p>{html.escape(line)}</p>"


def write_report(run_dir: str | Path, title: str = "", sample_every: int = 0) -> Path:
    """Write RUN_DIR/report.html (+ figures/); samples from the EMA model every ``sample_every`` rounds
    (0 = only the last round)."""
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    rounds, registry = store.metrics(), store.registry()
    rounds = list({r["round"]: r for r in rounds}.values())  # a re-run round after a crash replaces its line
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    train = _plot(_curves(rounds, "train", "train-loss"), "local training loss", "loss", figures / "train_loss.png")
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    stage_one = messages.STAGE_ONE in run.get("spec", {})
    held_out = _plot(_curves(rounds, "evaluate", "eval-loss"),
                     "held-out reconstruction loss" if stage_one else "held-out denoising loss", "loss",
                     figures / "eval_loss.png")
    privacy = _privacy_section(run_dir, rounds, registry, figures)
    rows, round_rows = _tables(run_dir, rounds)
    ending = _stopping(registry, store.stopped())
    images = ("<p>Stage 1 of latent diffusion: the run trained the autoencoder, which generates nothing on its "
              "own.</p>" if stage_one else _sample_grids(registry, sample_every, figures))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>meddiff run {html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px}} figure{{display:inline-block;margin:0 1em 1em 0}}</style></head><body>
<h1>meddiff run {html.escape(title)}</h1><p>{html.escape(str(run_dir))}: {len(rounds)} rounds.{ending}</p>
{_start_paragraph(run_dir, rounds)}{_latent_paragraph(run)}
<h2>Data split per site</h2><table><tr><th>site</th><th>train</th><th>held-out</th><th>labels</th><th>channels</th>
<th>missing</th></tr>{rows}</table>
<h2>Losses per round</h2><img src="figures/{train.name}"> <img src="figures/{held_out.name}">
<h2>Rounds</h2><table><tr><th>round</th><th>seconds</th><th>sites aggregated</th><th>rejected</th><th>why</th></tr>
{round_rows}</table>{privacy}<h2>Samples</h2>{images}</body></html>"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path
