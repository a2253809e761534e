"""``meddiff simulate``: N virtual hospitals on the Flower Simulation Engine, ending with an HTML report."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from ..common.console import plain_console, shown_path



def add_parser(commands) -> None:
    p = commands.add_parser("simulate", help="run a federated simulation scenario (default: 3 phantom hospitals)")
    p.add_argument("scenario", nargs="?", help="scenario TOML, or a built-in name (phantom, pneumonia, pgbm)")
    p.add_argument("--out", help="run directory (default runs/<scenario name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last round")
    p.add_argument("--rounds", type=int, help="override [federation] rounds")
    p.add_argument("--local-steps", type=int, help="override [federation] local_steps")
    p.add_argument("--data", help="override [scenario] data (a path, or phantom)")
    p.add_argument("--epsilon", type=float,
                   help="DP-SGD at every virtual site (per patient where the data names patients, else per "
                        "example) with this target epsilon per run (and budget)")
    p.add_argument("--initial-model", help="start round 1 from this model file (for example pretrained on public "
                   "data with `meddiff train`); channels are matched by name")
    p.add_argument("--autoencoder", metavar="FILE",
                   help="latent diffusion, stage 2: the sites train on the latents of this autoencoder.pt (`meddiff "
                        "train-autoencoder`); the scenario's resolution must be the autoencoder's")
    p.add_argument("--stage", choices=("denoiser", "autoencoder", "both"),
                   help="latent diffusion: train the autoencoder (stage 1), or both stages in one run (the scenario's "
                        "[autoencoder] table); default: the scenario's [federation] stage")
    p.add_argument("--sample-every", type=int, default=0, help="sample grids every K rounds (default: last only)")
    p.add_argument("--verbose-flower", action="store_true", help="show Flower's and Ray's own logs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..server import central_dp
    from ..simulations.report import write_report
    from ..simulations.runner import simulate
    from ..simulations.run_logs import simulation_logs
    from ..simulations.scenario import load_scenario
    from ..server.tracking import log_files, tracking_on

    scenario = load_scenario(args.scenario)
    federation = replace(scenario.federation, **{k: v for k, v in
                                                 (("rounds", args.rounds), ("local_steps", args.local_steps),
                                                  ("initial_model", args.initial_model),
                                                  ("autoencoder", args.autoencoder),
                                                  ("stage", args.stage)) if v is not None})
    data = replace(scenario.data, data=args.data) if args.data else scenario.data
    privacy = scenario.privacy
    if args.epsilon is not None:
        privacy = replace(privacy, enabled=True, target_epsilon=args.epsilon, budget_epsilon=args.epsilon)
    scenario = replace(scenario, federation=federation, data=data, privacy=privacy)
    out = Path(args.out or Path("runs") / scenario.name)
    console = plain_console()
    console.print(f"scenario {scenario.name}: {scenario.data.sites} sites on {scenario.data.data} "
                  f"({scenario.data.split} split), {federation.rounds} rounds x {federation.local_steps} local steps, "
                  f"{federation.strategy}; run directory {out}")
    if privacy.enabled:
        console.print(f"privacy: {privacy.unit}-level DP-SGD at each site (per example where the data names no "
                      f"patients), target epsilon {privacy.target_epsilon:g} per run "
                      f"(budget {privacy.budget:g}), delta {privacy.delta or '1/(10 N)'}, {privacy.accountant.upper()} "
                      f"accountant, clip {privacy.max_grad_norm:g}, noise multiplicity {privacy.noise_multiplicity}")
        if federation.stage == "both":
            console.print(f"privacy: both stages in one run: stage 1 (the autoencoder) targets "
                          f"{privacy.autoencoder_share:g} of it, stage 2 the rest; each site's ledger composes them")
    if federation.central_dp != "off":
        console.print(f"privacy: {central_dp.describe_settings(federation)}")
    if federation.secure_aggregation:
        console.print("secure aggregation: SecAgg+ (the coordinator sees only the mean of the sites' weights)")
    started = time.perf_counter()
    with simulation_logs(out, args.verbose_flower) as log_file:
        console.print(f"Flower's and Ray's messages go to {log_file}", soft_wrap=True)
        store = simulate(scenario, out, resume=args.resume, verbose=args.verbose_flower)
    report = write_report(out, scenario.name, args.sample_every)
    if tracking_on(federation):  # the report and its figures (sample grids, curves) beside the run's metrics
        log_files(out, federation.tracking_uri, [report, *sorted((report.parent / "figures").glob("*.png"))],
                  "report")
    last = store.registry()[-1]
    console.print(f"{last['round']} rounds in {time.perf_counter() - started:.0f} s; global model "
                  f"{shown_path(last['path'])}; report {shown_path(report)}")
    if "central_dp" in last:
        console.print(f"privacy: {central_dp.describe(last['central_dp'])}")
    if tracking_on(federation) and not federation.tracking_uri:
        console.print(f"tracked in MLflow; to browse it: mlflow ui --backend-store-uri "
                      f"sqlite:///{shown_path(out / 'mlflow.db')}", highlight=False, soft_wrap=True)
    return 0
