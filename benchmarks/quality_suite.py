"""The evidence suite: federated vs centralised vs single-site, privacy-utility, every task, on the real data.

    make bench-quick        # = meddiff bench --suite quality --quick   (under 20 min on 2 cores)
    make bench              # = meddiff bench --suite quality           (under 3 h on 2 cores)

Each experiment is a list of steps; each step is one command (a `meddiff` sub-command or a benchmark script) with
its own log in RUN/logs/. A step whose result file exists is not run again, so an interrupted suite continues
where it stopped (an interrupted simulation resumes from its last saved round; delete RUN/ to start over).
RUN/suite.json is rewritten after every step, so the time each finished step took survives an interruption. A
failed step is recorded and the suite goes on; the results page marks what is missing and why. At the end
docs/RESULTS.md and its figures (docs/results/) are written from the result files alone (quality_report.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_public  # noqa: E402
import quality_report  # noqa: E402
from meddiff.common.jsonl import read_json_lines, write_json_atomically  # noqa: E402
from pgbm_split import write_test_mix, write_training_by_study  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "simulations" / "scenarios"
PNEUMONIA = "medmnist/pneumoniamnist.npz"


@dataclass(frozen=True)
class Budget:
    """Everything that sets the suite's cost. Federated, centralised and single-site models of one experiment
    get the same number of optimiser steps of the same batch size: sites x rounds x local steps."""

    name: str
    pneumonia_rounds: int
    pneumonia_local_steps: int
    pneumonia_channels: tuple[int, ...]
    n_synthetic: int
    sampling_steps: int
    eval_seeds: tuple[int, ...]
    real_seeds: tuple[int, ...]  # the real-data reference CNN (80 s per seed on 2 cores with all 4690 images)
    real_images: int  # real training images of the reference CNN (0 = all 4690 of the archive)
    one_draw: bool  # one synthetic set per model; the evaluation seeds then vary only the CNN
    epsilons: tuple[float, ...]
    pgbm_rounds: int
    pgbm_local_steps: int
    pgbm_resolution: int
    pgbm_channels: tuple[int, ...]
    pgbm_test_slices: int
    task_samples: int
    unet_seconds: int
    jsrt_resolution: int
    jsrt_steps: int
    jsrt_synthetic_pairs: int
    hippocampus_steps: int
    hippocampus_cases: int  # training cases (the first N by name)
    hippocampus_test_cases: int  # test cases (the last N by name)
    public_steps: int = 1500  # optimiser steps of the public (JSRT) pretraining of experiment 2b
    pgbm_dp_epsilon: float = 10.0  # the PGBM run with patient-level DP (0 = not run)
    dp_noise_multiplicity: int = 4  # [privacy] noise_multiplicity of the DP runs: K draws per example, about K x
    # the cost of a DP step (K = 4, the sites' default, made one DP run 4 times slower than the whole quick suite)
    server_learning_rate: float = 0.01  # FedAdam's eta (Flower's default 1e-3 barely moves a model in a few rounds)
    sites: int = 3
    seed: int = 0
    # experiment 5, anomaly detection (benchmarks/anomaly_detection.py): healthy-only models, each method beside
    # the z-score baseline; limit = test and validation images per set (0 = all)
    anomaly_sets: tuple[str, ...] = ("pneumonia",)
    anomaly_steps: int = 300
    anomaly_limit: int = 128
    anomaly_seeds: int = 1
    anomaly_methods: tuple[str, ...] = ("anoddpm", "multi-depth")
    # what a GPU budget changes: which experiments run, the PneumoniaMNIST size (0 = the archive's 28 px), the
    # batch size (0 = the scenario's), and early stopping: with patience P > 0 every model trains until its
    # held-out loss has not improved for P evaluations (a federation: P rounds; a pooled or single-site model:
    # P evaluations, one per sites x local_steps steps, the steps of one federated round), rounds being the cap
    experiments: tuple[str, ...] = ("pneumonia", "pgbm", "segmentation", "anomaly")
    pneumonia_resolution: int = 0
    batch_size: int = 0
    early_stopping: int = 0
    dp_rounds: int = 0  # rounds of the runs with DP at the sites, which never stop early (0 = the experiment's rounds)


BUDGETS = {
    "quick": Budget("quick", pneumonia_rounds=2, pneumonia_local_steps=40, pneumonia_channels=(16, 32, 32),
                    n_synthetic=200, sampling_steps=10, eval_seeds=(0, 1, 2), real_seeds=(0,), real_images=1000,
                    one_draw=True, epsilons=(10.0,),
                    pgbm_rounds=2, pgbm_local_steps=25, pgbm_resolution=32, pgbm_channels=(16, 32, 32),
                    pgbm_test_slices=6, task_samples=2, unet_seconds=15, jsrt_resolution=32, jsrt_steps=150,
                    jsrt_synthetic_pairs=32, hippocampus_steps=100, hippocampus_cases=60,
                    hippocampus_test_cases=20, public_steps=300, pgbm_dp_epsilon=0.0, dp_noise_multiplicity=1),
    "full": Budget("full", pneumonia_rounds=5, pneumonia_local_steps=150, pneumonia_channels=(16, 32, 32),
                   n_synthetic=1000, sampling_steps=20, eval_seeds=(0, 1, 2), real_seeds=(0, 1, 2),
                   real_images=0, one_draw=True, epsilons=(1.0, 4.0, 10.0),
                   pgbm_rounds=5, pgbm_local_steps=100, pgbm_resolution=32, pgbm_channels=(16, 32, 32),
                   pgbm_test_slices=24, task_samples=4, unet_seconds=120, jsrt_resolution=64, jsrt_steps=600,
                   jsrt_synthetic_pairs=128, hippocampus_steps=600, hippocampus_cases=200,
                   hippocampus_test_cases=60, dp_noise_multiplicity=1,
                   anomaly_sets=("pneumonia", "breast", "pgbm"), anomaly_steps=1500, anomaly_limit=0, anomaly_seeds=3,
                   anomaly_methods=("anoddpm", "anoddpm-simplex", "multi-depth", "pddpm", "counterfactual")),
    # One GPU call (benchmarks/gpu_evidence.sh, at most 8 minutes of an H200): PneumoniaMNIST at 64 px and PGBM at
    # 64 px with the widths a GPU site would use, every model trained until its held-out loss stops improving
    # (rounds and steps are caps). The sizes are estimates from the measured 64 px training speed (docs/gpu.md);
    # the run's suite.json records what each step took.
    "gpu": Budget("gpu", pneumonia_rounds=30, pneumonia_local_steps=100, pneumonia_channels=(64, 128, 128),
                  n_synthetic=1000, sampling_steps=20, eval_seeds=(0, 1, 2), real_seeds=(0,), real_images=0,
                  one_draw=True, epsilons=(1.0, 4.0, 10.0),
                  pgbm_rounds=30, pgbm_local_steps=50, pgbm_resolution=64, pgbm_channels=(64, 128, 128),
                  pgbm_test_slices=24, task_samples=4, unet_seconds=30, jsrt_resolution=64, jsrt_steps=600,
                  jsrt_synthetic_pairs=128, hippocampus_steps=600, hippocampus_cases=200, hippocampus_test_cases=60,
                  dp_noise_multiplicity=1, experiments=("pneumonia", "pgbm"), pneumonia_resolution=64,
                  batch_size=64, early_stopping=3, dp_rounds=8),
    # The GPU budget's shape at toy sizes, for a CPU smoke run of benchmarks/gpu_evidence.sh (minutes on 2 cores):
    # it proves the script, the early stopping and the page, not the figures.
    "smoke": Budget("smoke", pneumonia_rounds=3, pneumonia_local_steps=5, pneumonia_channels=(8, 16, 16),
                    n_synthetic=60, sampling_steps=5, eval_seeds=(0,), real_seeds=(0,), real_images=300,
                    one_draw=True, epsilons=(10.0,),
                    pgbm_rounds=2, pgbm_local_steps=4, pgbm_resolution=32, pgbm_channels=(8, 16, 16),
                    pgbm_test_slices=4, task_samples=1, unet_seconds=3, jsrt_resolution=32, jsrt_steps=20,
                    jsrt_synthetic_pairs=8, hippocampus_steps=10, hippocampus_cases=10, hippocampus_test_cases=4,
                    public_steps=20, pgbm_dp_epsilon=0.0, dp_noise_multiplicity=1, experiments=("pneumonia", "pgbm"),
                    pneumonia_resolution=32, batch_size=8, early_stopping=1),
}


@dataclass
class Step:
    """One command of the suite. ``argv`` is built when the step runs (it may name a file an earlier step made)."""

    name: str
    argv: Callable[[], list[str]]
    done: Path  # the result file; its presence means the step has run
    needs: tuple[Path, ...] = ()
    info: dict = field(default_factory=dict)
    fresh: tuple[Path, ...] = ()  # removed before the step runs: what an interrupted run of it may have left


def _simulate(scenario: Path, run: Path, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """`meddiff simulate`, resuming from the last saved round when an earlier run of the suite was interrupted."""
    resume = ["--resume"] if (run / "run.json").exists() else []
    return [_meddiff(), "simulate", str(scenario), "--out", str(run), *extra, *resume]


# -- helpers ------------------------------------------------------------------------------------------------------

def _meddiff() -> str:
    here = Path(sys.executable).parent / "meddiff"
    return str(here) if here.exists() else (shutil.which("meddiff") or "meddiff")


def _script(name: str) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks" / name)]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_scenario(builtin: str, path: Path, name: str, overrides: dict[str, dict]) -> Path:
    """A copy of a built-in scenario with ``overrides`` ({section: {key: value}}), as the suite ran it."""
    raw = tomllib.loads((SCENARIOS / f"{builtin}.toml").read_text())
    raw["name"] = name
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    lines = [f"name = {_toml_value(raw.pop('name'))}"]
    for section, values in raw.items():
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def model_section(channels: tuple[int, ...]) -> dict:
    """[model] for UNet widths ``channels``, with the group norm and attention head sizes `meddiff train
    --channels` would choose."""
    return {"channels": list(channels), "norm_num_groups": math.gcd(32, *channels),
            "num_head_channels": min(32, channels[-1])}


def train_section(budget: Budget) -> dict:
    """[train] of the suite's scenarios: the seed, and the budget's batch size when it sets one."""
    return {"seed": budget.seed, **({"batch_size": budget.batch_size} if budget.batch_size else {})}


def stopping(budget: Budget) -> dict:
    """[federation] early stopping: the rounds become a cap."""
    return {"early_stopping_patience": budget.early_stopping} if budget.early_stopping else {}


def private_federation(federation: dict, budget: Budget, rounds: int) -> dict:
    """[federation] of a run with DP at the sites: FedAvg, and a fixed number of rounds, never early stopping.
    Stopping on the sites' held-out loss would choose the model on private examples that DP-SGD's epsilon does
    not cover (the held-out split is not trained on, and its loss leaves the site without noise)."""
    fixed = {k: v for k, v in federation.items() if not k.startswith("early_stopping")}
    return {**fixed, "strategy": "fedavg", "rounds": budget.dp_rounds or rounds}


def comparator_stopping(budget: Budget, experiment: str) -> list[str]:
    """quality_train.py's early stopping: one evaluation per federated round's worth of steps."""
    if not budget.early_stopping:
        return []
    local = budget.pneumonia_local_steps if experiment == "pneumonia" else budget.pgbm_local_steps
    return ["--early-stopping", str(budget.early_stopping), "--eval-every", str(budget.sites * local)]


def global_model(run: Path) -> str:
    """The last registered global model of a `meddiff simulate` run directory."""
    return read_json_lines(run / "registry.jsonl")[-1]["path"]


# -- experiments --------------------------------------------------------------------------------------------------

def pneumonia_steps(budget: Budget, data: Path, out: Path) -> list[Step]:
    """Experiments 1 and 2: PneumoniaMNIST over 3 sites (Dirichlet alpha 0.5), judged by TSTR."""
    archive = data / PNEUMONIA
    root = out / "pneumonia"
    base = {"scenario": {"data": str(archive), "sites": budget.sites, "seed": budget.seed,
                         **({"resolution": budget.pneumonia_resolution} if budget.pneumonia_resolution else {})},
            "federation": {"rounds": budget.pneumonia_rounds, "local_steps": budget.pneumonia_local_steps,
                           "min_sites": budget.sites, "server_learning_rate": budget.server_learning_rate,
                           **stopping(budget)},
            "model": model_section(budget.pneumonia_channels), "train": train_section(budget)}
    scenarios = {s: write_scenario("pneumonia", root / "scenarios" / f"{s}.toml", f"pneumonia-{s}",
                                   {**base, "federation": {**base["federation"], "strategy": s}})
                 for s in ("fedavg", "fedadam")}
    total = budget.sites * budget.pneumonia_rounds * budget.pneumonia_local_steps
    extractor = root / "real" / "extractor.pt"
    evaluate = ["--data", str(archive), "--n-synthetic", str(budget.n_synthetic), "--sampling-steps",
                str(budget.sampling_steps), "--seeds", ",".join(map(str, budget.eval_seeds)), "--extractor",
                str(extractor)] + (["--one-draw"] if budget.one_draw else [])
    steps = [Step("pneumonia/real", lambda: [*_script("quality_tstr.py"), "--real", "--data", str(archive),
                                             "--seeds", ",".join(map(str, budget.real_seeds)),
                                             "--real-images", str(budget.real_images),
                                             "--out", str(root / "real")], root / "real" / "result.json",
                  info={"method": "real data"})]

    def federated(name: str, scenario: Path, extra: list[str], info: dict) -> None:
        run = root / name / "run"
        steps.append(Step(f"pneumonia/{name}/train", lambda: _simulate(scenario, run, extra), run / "report.html",
                          info=info))
        steps.append(Step(f"pneumonia/{name}/eval", lambda: [*_script("quality_tstr.py"), "--model",
                                                              global_model(run), *evaluate, "--out",
                                                              str(root / name)],
                          root / name / "result.json", needs=(run / "report.html", extractor), info=info))

    def alone(name: str, sites: str, info: dict) -> None:
        folder = root / name
        steps.append(Step(f"pneumonia/{name}/train", lambda: [*_script("quality_train.py"), str(scenarios["fedavg"]),
                                                               "--sites", sites, "--steps", str(total), "--out",
                                                               str(folder / "model"),
                                                               *comparator_stopping(budget, "pneumonia")],
                          folder / "model" / "train.json", info=info))
        steps.append(Step(f"pneumonia/{name}/eval", lambda: [*_script("quality_tstr.py"), "--model",
                                                              str(folder / "model" / "model.pt"), *evaluate,
                                                              "--out", str(folder)],
                          folder / "result.json", needs=(folder / "model" / "train.json", extractor), info=info))

    federated("fedavg", scenarios["fedavg"], [], {"method": "federated, FedAvg", "kind": "federated"})
    adam = f"federated, FedAdam (eta {budget.server_learning_rate:g})"
    federated("fedadam", scenarios["fedadam"], [], {"method": adam, "kind": "federated"})
    alone("central", "all", {"method": "centralised (3 sites pooled)", "kind": "centralised"})
    for site in range(budget.sites):
        alone(f"site-{site}", str(site), {"method": f"site-{site} alone", "kind": "single site"})
    fixed = private_federation(base["federation"], budget, budget.pneumonia_rounds)
    private = write_scenario("pneumonia", root / "scenarios" / "fedavg-dp.toml", "pneumonia-fedavg-dp",
                             {**base, "federation": fixed,
                              "privacy": {"noise_multiplicity": budget.dp_noise_multiplicity}})
    for epsilon in budget.epsilons:
        federated(f"eps-{epsilon:g}", private, ["--epsilon", f"{epsilon:g}"],
                  {"method": f"federated, FedAvg, example-level DP epsilon {epsilon:g}", "kind": "dp",
                   "epsilon": epsilon})
    part = write_scenario("pneumonia", root / "scenarios" / "fedavg-dp-part.toml", "pneumonia-fedavg-dp-part",
                          {**base, "federation": fixed,
                           "privacy": {"noise_multiplicity": budget.dp_noise_multiplicity},
                           "train": {**base["train"], "trainable": quality_public.PART}})
    files = quality_public.pretrain_files(root, scenarios["fedavg"], _toml_value)
    quality_public.public_start_steps(steps, Step, _meddiff(), _simulate, evaluate, data, root,
                                      {"fedavg": scenarios["fedavg"], "dp": private, "dp-part": part,
                                       "public-files": files}, budget, _script)
    return steps


PGBM_TASKS = {  # name: (command, arguments); each command's report carries its classical baselines
    "translation t1pre -> t2": ("translate", ["--from", "t1pre", "--to", "t2"]),
    "segmentation (tumour)": ("segment", []),
    "anomaly detection (AnoDDPM, t*=0.3)": ("detect-anomalies", ["--method", "anoddpm", "--depth", "0.3"]),
    "reconstruction t2 x4, t1pre given": ("reconstruct", ["--channel", "t2", "--acceleration", "4",
                                                          "--given", "t1pre"]),
    "denoising (Gaussian 0.1)": ("denoise", ["--simulate", "0.1"]),
    "super-resolution x2": ("super-resolve", ["--simulate", "--factor", "2"]),
}


TASK_MODULES = {"denoise": "denoise", "super-resolve": "super_resolve", "detect-anomalies": "anomaly",
                "reconstruct": "reconstruct_task", "segment": "segment", "translate": "translate"}


def output_stem(command: str) -> str:
    """The name a task command gives its outputs (OUT/<stem>.json, .npz, .png): its task module's OUTPUT."""
    return importlib.import_module(f"meddiff.tasks.{TASK_MODULES[command]}").OUTPUT


def _task_stems() -> dict[str, tuple[str, str]]:
    return {task: (command, output_stem(command)) for task, (command, _) in PGBM_TASKS.items()}


def pgbm_steps(budget: Budget, data: Path, out: Path) -> list[Step]:
    """Experiment 3: PGBM studies over 3 sites with channel skew; every task with the federated, centralised and
    single-site models, each next to the classical baselines its command reports."""
    root = out / "pgbm"
    if not (data / "pgbm").exists():
        return []
    train_npz = write_training_by_study(data, root / "data")
    test_npz = write_test_mix(data, root / "data", budget.pgbm_test_slices)
    scenario = write_scenario("pgbm", root / "scenarios" / "fedavg.toml", "pgbm-fedavg", {
        "scenario": {"data": str(train_npz), "sites": budget.sites, "resolution": budget.pgbm_resolution,
                     "seed": budget.seed},
        "federation": {"rounds": budget.pgbm_rounds, "local_steps": budget.pgbm_local_steps,
                       "min_sites": budget.sites, **stopping(budget)},
        "model": model_section(budget.pgbm_channels), "train": train_section(budget)})
    total = budget.sites * budget.pgbm_rounds * budget.pgbm_local_steps
    steps, models = [], {}
    run = root / "federated" / "run"
    steps.append(Step("pgbm/federated/train", lambda: _simulate(scenario, run),
                      run / "report.html", info={"method": "federated, FedAvg"}))
    models["federated"] = (lambda: global_model(run), run / "report.html")
    if budget.pgbm_dp_epsilon:  # patient-level DP (the archive's study ids name the patients)
        tables = {k: v for k, v in tomllib.loads(scenario.read_text()).items() if isinstance(v, dict)}
        private = write_scenario("pgbm", root / "scenarios" / "fedavg-dp.toml", "pgbm-fedavg-dp", {
            **tables, "federation": private_federation(tables["federation"], budget, budget.pgbm_rounds),
            "privacy": {"noise_multiplicity": budget.dp_noise_multiplicity, "unit": "patient"}})
        dp_run = root / "federated-dp" / "run"
        steps.append(Step("pgbm/federated-dp/train", lambda: _simulate(private, dp_run, [
            "--epsilon", f"{budget.pgbm_dp_epsilon:g}"]), dp_run / "report.html",
            info={"method": f"federated, FedAvg, patient-level DP epsilon {budget.pgbm_dp_epsilon:g}"}))
        models["federated-dp"] = (lambda: global_model(dp_run), dp_run / "report.html")
    for name, sites in [("central", "all")] + [(f"site-{k}", str(k)) for k in range(budget.sites)]:
        folder = root / name / "model"
        steps.append(Step(f"pgbm/{name}/train", lambda folder=folder, sites=sites: [
            *_script("quality_train.py"), str(scenario), "--sites", sites, "--steps", str(total), "--out",
            str(folder), *comparator_stopping(budget, "pgbm")], folder / "train.json"))
        models[name] = (lambda folder=folder: str(folder / "model.pt"), folder / "train.json")
    samples = ["--samples", str(budget.task_samples)]
    unet = ["--baseline-train", str(train_npz), "--baseline-seconds", str(budget.unet_seconds)]
    for name, (model, trained) in models.items():
        for index, (task, (command, extra)) in enumerate(PGBM_TASKS.items()):
            folder = root / name / f"{index}_{command}"
            more = list(extra)
            if command in ("segment", "translate"):
                more += samples + (unet if name == "federated" else [])  # one supervised UNet: trained centrally
            if command == "translate":
                more += ["--reference-data", str(train_npz)]
            steps.append(Step(f"pgbm/{name}/{index}_{command}", lambda model=model, command=command, more=more,
                              folder=folder: [_meddiff(), command, "--model", model(), "--data", str(test_npz),
                                              "--seed", str(budget.seed), *more, "--out", str(folder)],
                              folder / f"{output_stem(command)}.json", needs=(trained,),
                              info={"task": task, "model": name}))
    return steps


def segmentation_steps(budget: Budget, data: Path, out: Path) -> list[Step]:
    """Experiment 4: JSRT lungs (synthetic vs real pairs) and hippocampus 3D, through their benchmark scripts."""
    unet = str(budget.unet_seconds)
    return [
        Step("jsrt", lambda: [*_script("jsrt_lungs.py"), "--data", str(data), "--out", str(out / "jsrt"),
                              "--resolution", str(budget.jsrt_resolution), "--train-steps", str(budget.jsrt_steps),
                              "--channels", ",".join(map(str, budget.pneumonia_channels)),
                              "--baseline-seconds", unet, "--synthetic-pairs", str(budget.jsrt_synthetic_pairs),
                              "--samples", str(budget.task_samples), "--seed", str(budget.seed)],
             out / "jsrt" / "results.json", fresh=(out / "jsrt" / "model",)),
        Step("hippocampus", lambda: [*_script("hippocampus_3d.py"), "--data", str(data), "--out",
                                     str(out / "hippocampus"), "--train-steps", str(budget.hippocampus_steps),
                                     "--train-cases", str(budget.hippocampus_cases), "--test-cases",
                                     str(budget.hippocampus_test_cases), "--samples", str(budget.task_samples),
                                     "--baseline-seconds", unet,
                                     "--seed", str(budget.seed)], out / "hippocampus" / "results.json",
             fresh=(out / "hippocampus" / "model",)),
    ]


def anomaly_steps(budget: Budget, data: Path, out: Path) -> list[Step]:
    """Experiment 5: anomaly detection with healthy-only models on PneumoniaMNIST, BreastMNIST and PGBM."""
    folder = out / "anomaly"
    return [Step("anomaly", lambda: [*_script("anomaly_detection.py"), "--sets", ",".join(budget.anomaly_sets),
                                     "--steps", str(budget.anomaly_steps), "--limit", str(budget.anomaly_limit),
                                     "--seeds", str(budget.anomaly_seeds), "--sampler-steps",
                                     str(budget.sampling_steps), "--methods", ",".join(budget.anomaly_methods),
                                     "--out", str(folder)], folder / "results.json")]


EXPERIMENTS = {"pneumonia": pneumonia_steps, "pgbm": pgbm_steps, "segmentation": segmentation_steps,
               "anomaly": anomaly_steps}
NEEDS = {"pneumonia": (PNEUMONIA,), "pgbm": ("pgbm/pgbm_t1_t1c_flair_t2_mask_128.npz",),
         "segmentation": ("jsrt/images", "jsrt/masks", "hippocampus/images", "hippocampus/labels"),
         "anomaly": (PNEUMONIA,)}  # the full budget's other sets are skipped, with a line, where absent


def missing_data(data: Path, experiments: list[str]) -> list[str]:
    """The data sets the chosen experiments read that the data folder lacks."""
    return [str(data / need) for experiment in experiments for need in NEEDS[experiment] if not (data / need).exists()]


def accelerator() -> str:
    """The GPUs the suite's steps could use ('' for none), as nvidia-smi names them."""
    if not shutil.which("nvidia-smi"):
        return ""
    found = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True)
    names = [line.strip() for line in found.stdout.splitlines() if line.strip()] if found.returncode == 0 else []
    return ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names))


# -- running ------------------------------------------------------------------------------------------------------

def run_step(step: Step, out: Path, earlier: dict | None, save: Callable[[dict], None]) -> dict:
    """Run one step (its output to its log); the record says what ran, for how long, and how it ended.
    ``earlier``: this step's record from an earlier run of the suite in ``out`` (kept when its result is).
    ``save`` is called with an 'interrupted' record before the command starts (the caller saves the returned
    one), so a suite killed mid-step leaves that record, and the next run says the step was resumed."""
    log = out / "logs" / f"{step.name.replace('/', '__')}.log"
    record = {"step": step.name, "log": str(log.relative_to(out)), **step.info}
    if step.done.exists():
        return {**(earlier or record), "status": "ok (result kept from an earlier run)"}
    missing = [str(p) for p in step.needs if not p.exists()]
    if missing:
        return {**record, "status": f"not run: needs {', '.join(missing)} (an earlier step failed)"}
    for path in step.fresh:  # e.g. a checkpoint of an interrupted training, which the script would take as done
        shutil.rmtree(path, ignore_errors=True)
    argv = step.argv()
    record["command"] = " ".join(argv)
    resumed = (earlier or {}).get("status", "").startswith("interrupted")
    save({**record, "status": f"interrupted (started {time.strftime('%Y-%m-%d %H:%M')}; did not finish)"})
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("a" if resumed else "w") as handle:
        handle.write(f"$ {record['command']}\n")
        handle.flush()
        code = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                              env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}).returncode
    record["seconds"] = round(time.perf_counter() - start, 1)
    ok = code == 0 and step.done.exists()
    record["status"] = "ok" if ok else f"failed (exit {code}{'' if step.done.exists() else ', no result file'})"
    if resumed:  # the interrupted attempt's time is not known, so the step's seconds undercount it
        record["status"] += " (resumed after an interrupted attempt, whose time is not counted)"
    print(f"  {step.name}: {record['status']} in {record['seconds']:.0f} s (log {log})", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick budget (under 20 min on 2 cores)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), help="quick, full (default), gpu (one GPU call: "
                        "benchmarks/gpu_evidence.sh) or smoke (the gpu budget's shape at toy sizes, on CPU)")
    parser.add_argument("--data", default=os.environ.get("MEDDIFF_DATA", str(REPO.parent / "shared" / "data")),
                        help="the folder of the shared data sets (default ../shared/data)")
    parser.add_argument("--out", help="run directory (default bench_out/quality-<budget>)")
    parser.add_argument("--only", default="", help=f"comma-separated experiments, of {list(EXPERIMENTS)}")
    parser.add_argument("--results", default=str(REPO / "docs" / "RESULTS.md"), help="the results page to write")
    parser.add_argument("--steps", default="", help="run only the steps whose name matches this regular expression")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write the page again from the run directory's suite.json")
    args = parser.parse_args(argv)
    if args.quick and args.budget not in (None, "quick"):
        parser.error(f"--quick is --budget quick; it cannot go with --budget {args.budget}")
    budget = BUDGETS[args.budget or ("quick" if args.quick else "full")]
    data = Path(args.data).resolve()
    out = Path(args.out or REPO / "bench_out" / f"quality-{budget.name}").resolve()
    if args.report_only:
        if not (out / "suite.json").is_file():
            print(f"meddiff bench: error: --report-only: {out / 'suite.json'} does not exist; give --out the run "
                  f"directory of an earlier `meddiff bench` (and --quick if it was the quick budget). Nothing was "
                  "written.",
                  file=sys.stderr)
            return 2
        ran = json.loads((out / "suite.json").read_text())
        if "command" not in ran["machine"]:
            print(f"meddiff bench: error: --report-only: the suite in {out} has not finished (its suite.json says "
                  f"{ran['machine']}); let it finish, or run it again to continue it", file=sys.stderr)
            return 2
        page = quality_report.write_results(out, Path(args.results), budget=asdict(budget), machine=ran["machine"],
                                            records=ran["records"], data=data, pgbm_tasks=_task_stems())
        print(f"results page {page} (from {out / 'suite.json'})")
        return 0
    if not data.is_dir():
        print(f"meddiff bench: error: the data folder {data} does not exist; give --data (or MEDDIFF_DATA=...) the "
              f"folder of the shared data sets (medmnist/, pgbm/, jsrt/, hippocampus/). Nothing was run.", file=sys.stderr)
        return 2
    try:
        wanted = re.compile(args.steps)
    except re.error as error:
        parser.error(f"--steps {args.steps!r} is not a regular expression ({error})")
    chosen = [e.strip() for e in args.only.split(",") if e.strip()] or list(budget.experiments)
    unknown = sorted(set(chosen) - set(EXPERIMENTS))
    if unknown:
        parser.error(f"--only {unknown}: the experiments are {list(EXPERIMENTS)}")
    absent = missing_data(data, chosen)
    if absent:
        print(f"meddiff bench: error: the data folder {data} lacks {', '.join(absent)}; give --data the folder of "
              f"the shared data sets, or choose experiments with --only. Nothing was run and no page was written.",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "budget.json").write_text(json.dumps(asdict(budget), indent=2))
    started = time.perf_counter()
    suite = out / "suite.json"
    earlier = {r["step"]: r for r in json.loads(suite.read_text())["records"]} if suite.exists() else {}
    kept = dict(earlier)  # every step's latest record, this run's and earlier runs' (of other experiments too)

    def save(record: dict) -> None:
        kept[record["step"]] = record
        write_json_atomically(suite, {"machine": {"status": "in progress"}, "records": list(kept.values())})

    for experiment in chosen:
        steps = EXPERIMENTS[experiment](budget, data, out)
        print(f"{experiment}: {len(steps)} steps" + ("" if steps else " (its data is absent: skipped)"), flush=True)
        for step in (s for s in steps if wanted.search(s.name)):
            save(run_step(step, out, earlier.get(step.name), save))
    records = list(kept.values())
    machine = {"host": platform.node(), "cpus": os.cpu_count(), "gpu": accelerator(),
               "python": platform.python_version(),
               "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
               "seconds": round(time.perf_counter() - started), "command": " ".join(
                   ["meddiff bench --suite quality"] + (["--quick"] if budget.name == "quick" else
                                                        [f"--budget {budget.name}"] if budget.name != "full" else []) +
                   ([f"--only {args.only}"] if args.only else []) +
                   ([f"--steps '{args.steps}'"] if args.steps else []))}
    write_json_atomically(suite, {"machine": machine, "records": records})
    page = quality_report.write_results(out, Path(args.results), budget=asdict(budget), machine=machine,
                                        records=records, data=data, pgbm_tasks=_task_stems())
    failed = [r["step"] for r in records if not r["status"].startswith(("ok", "done"))]
    print(f"suite {budget.name}: {len(records)} steps in {machine['seconds']} s; "
          f"{len(failed)} did not complete{': ' + ', '.join(failed) if failed else ''}; results page {page}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
