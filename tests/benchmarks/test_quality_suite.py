"""The evidence suite's own parts: its fidelity metrics, the scenarios it writes, its centralised comparator and
the PGBM test mix. (The suite itself is `make bench-quick`: 20 minutes, a benchmark, not a test.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import quality_suite  # noqa: E402
from quality_tstr import frechet_distance, precision_recall  # noqa: E402

from meddiff.common.diffusion.loading import load_model  # noqa: E402
from meddiff.simulations.scenario import load_scenario, site_partitions  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def _blobs(n: int, centre: float, seed: int, dim: int = 8) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + centre


def test_precision_and_recall_tell_fidelity_from_coverage():
    real = torch.cat([_blobs(200, 0.0, 0), _blobs(200, 20.0, 1)])  # two modes
    assert precision_recall(real, torch.cat([_blobs(200, 0.0, 2), _blobs(200, 20.0, 3)])) > (0.8, 0.8)
    one_mode = precision_recall(real, _blobs(400, 0.0, 4))  # faithful but covers half the real data
    assert one_mode[0] > 0.8 and 0.3 < one_mode[1] < 0.7
    assert precision_recall(real, _blobs(400, 60.0, 5)) == (0.0, 0.0)  # nothing real-looking


def test_frechet_distance_is_zero_for_one_distribution_and_grows_with_the_mean_shift():
    a, b = _blobs(4000, 0.0, 0), _blobs(4000, 0.0, 1)
    assert frechet_distance(a, b) < 0.1
    shifted = frechet_distance(a, _blobs(4000, 1.0, 2))  # |mu shift|^2 = 8 dims x 1
    assert shifted == pytest.approx(8.0, rel=0.1)


def test_a_written_scenario_loads_with_the_suites_settings(tmp_path):
    path = quality_suite.write_scenario("pneumonia", tmp_path / "s.toml", "pneumonia-fedadam", {
        "scenario": {"data": "/somewhere/p.npz", "seed": 3},
        "federation": {"rounds": 4, "local_steps": 7, "strategy": "fedadam", "server_learning_rate": 0.01},
        "model": {"channels": [16, 32, 32]}})
    scenario = load_scenario(path)
    assert (scenario.name, scenario.data.data, scenario.data.seed) == ("pneumonia-fedadam", "/somewhere/p.npz", 3)
    federation = scenario.federation
    assert (federation.rounds, federation.local_steps, federation.strategy) == (4, 7, "fedadam")
    assert scenario.federation.server_learning_rate == 0.01 and tuple(scenario.model.channels) == (16, 32, 32)
    assert scenario.data.alpha == 0.5 and scenario.data.split == "dirichlet"  # the rest stays the built-in's


@pytest.mark.slow
def test_the_centralised_comparator_trains_on_every_sites_training_examples(tmp_path):
    scenario = quality_suite.write_scenario("phantom", tmp_path / "phantom.toml", "phantom-small", {
        "scenario": {"examples_per_site": 8, "resolution": 16}, "model": quality_suite.model_section((8, 16, 16))})
    for sites, folder in (("all", "central"), ("1", "site-1")):
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality_train.py"), str(scenario), "--sites",
                        sites, "--steps", "3", "--out", str(tmp_path / folder)], check=True, cwd=REPO)
    _, parts = site_partitions(load_scenario(scenario))
    central = json.loads((tmp_path / "central" / "train.json").read_text())
    single = json.loads((tmp_path / "site-1" / "train.json").read_text())
    assert central["data"]["examples"] == sum(len(p.train) for p in parts)
    assert single["data"]["examples"] == len(parts[1].train) < central["data"]["examples"]
    assert central["total_steps"] == 3
    assert load_model(tmp_path / "central" / "model.pt", device="cpu").resolution == 16


@pytest.mark.realdata
def test_the_pgbm_test_mix_is_half_tumour_and_only_test_patients(tmp_path):
    if not (DATA / "pgbm").exists():
        pytest.skip(f"{DATA / 'pgbm'} is absent (the shared PGBM archive)")
    from pgbm_split import TEST_PATIENTS, write_test_mix, write_training_by_study

    mix = np.load(write_test_mix(DATA, tmp_path, 6))
    assert len(mix["study"]) == 6
    assert {str(s).split("/")[0] for s in mix["study"]} <= set(TEST_PATIENTS)
    assert mix["mask"].reshape(6, -1).any(axis=1).sum() == 3
    train = np.load(write_training_by_study(DATA, tmp_path))
    assert not {str(s).split("/")[0] for s in train["study"]} & set(TEST_PATIENTS)
    assert len(set(train["patient"].tolist())) == 4  # one unit per study: 4 training studies for 3 sites


def test_meddiff_bench_without_the_data_says_so_and_does_nothing(tmp_path):
    from meddiff.cli import main

    assert main(["bench", "--suite", "quality", "--quick", "--data", str(tmp_path / "absent"),
                 "--out", str(tmp_path / "run"), "--results", str(tmp_path / "RESULTS.md")]) == 2
    assert not (tmp_path / "RESULTS.md").exists() and not (tmp_path / "run").exists()


def test_a_step_killed_midway_leaves_an_interrupted_record_and_its_rerun_says_it_resumed(tmp_path):
    """suite.json is saved before and after each command, so a suite killed mid-step keeps the times it measured."""
    done = tmp_path / "result.json"
    write = [sys.executable, "-c", f"open({str(done)!r}, 'w').write('{{}}')"]
    saved = []
    crashed = quality_suite.Step("x/crash", lambda: [sys.executable, "-c", "raise SystemExit(3)"], done)
    record = quality_suite.run_step(crashed, tmp_path, None, saved.append)
    assert saved[0]["status"].startswith("interrupted") and record["status"].startswith("failed (exit 3")
    step = quality_suite.Step("x/write", lambda: write, done)
    record = quality_suite.run_step(step, tmp_path, saved[0], saved.append)  # as after a kill: no end record
    assert record["status"].startswith("ok (resumed") and "seconds" in record and done.exists()
    kept = quality_suite.run_step(step, tmp_path, record, saved.append)
    assert kept["seconds"] == record["seconds"] and kept["status"] == "ok (result kept from an earlier run)"
    assert (tmp_path / "logs" / "x__write.log").read_text().startswith("$ ")


def test_the_privacy_table_counts_the_rounds_a_site_refused_and_keeps_its_last_epsilon(tmp_path):
    """A site whose ledger is spent stops reporting; the page must show its epsilon and the missing updates."""
    from quality_report import _dp_run_facts

    rounds = [{"round": 1, "train": {"a": {"epsilon": 4.0, "delta": 1e-4}, "b": {"epsilon": 6.0, "delta": 2e-4}}},
              {"round": 2, "train": {"a": {"epsilon": 7.0, "delta": 1e-4}}},  # b refused: its budget was spent
              {"round": 3, "train": {}}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    assert _dp_run_facts(tmp_path, sites=2) == (7.0, 1e-4, 3, 6)
    assert _dp_run_facts(tmp_path / "absent", sites=2) is None


def test_report_only_without_a_run_says_which_folder_and_writes_nothing(tmp_path, capsys):
    assert quality_suite.main(["--report-only", "--out", str(tmp_path / "run"),
                               "--results", str(tmp_path / "RESULTS.md")]) == 2
    assert str(tmp_path / "run" / "suite.json") in capsys.readouterr().err
    assert not (tmp_path / "RESULTS.md").exists()


def test_the_public_pretraining_trains_the_network_the_federation_starts_from(tmp_path):
    """Experiment 2b: the JSRT model must fit the PneumoniaMNIST runs exactly (a different network is refused)."""
    from meddiff.server.federation_config import load_federation_config

    (tmp_path / "data" / "jsrt").mkdir(parents=True)
    steps = quality_suite.pneumonia_steps(quality_suite.BUDGETS["quick"], tmp_path / "data", tmp_path / "out")
    names = [s.name for s in steps]
    assert {"pneumonia/public/train", "pneumonia/public-none/eval", "pneumonia/public-eps-10/train",
            "pneumonia/public-norms-attention-eps-10/eval"} <= set(names)
    root = tmp_path / "out" / "pneumonia"
    plan = load_federation_config(root / "public" / "plan.toml").spec
    for scenario in ("fedavg", "fedavg-dp", "fedavg-dp-part"):
        loaded = load_scenario(root / "scenarios" / f"{scenario}.toml")
        assert plan.model == loaded.model and plan.resolution == loaded.data.resolution
    assert load_scenario(root / "scenarios" / "fedavg-dp-part.toml").recipe.trainable == "norms-attention"
    train = next(s for s in steps if s.name == "pneumonia/public-eps-10/train").argv()
    assert train[train.index("--initial-model") + 1] == str(root / "public" / "model" / "model.pt")


@pytest.mark.realdata
def test_the_full_budget_adds_a_pgbm_run_with_patient_level_dp(tmp_path):
    from dataclasses import replace

    from tests.conftest import shared

    data = shared("pgbm").parent
    budget = replace(quality_suite.BUDGETS["full"], pgbm_test_slices=2)
    steps = quality_suite.pgbm_steps(budget, data, tmp_path)
    assert "pgbm/federated-dp/train" in [s.name for s in steps]
    assert any(s.name.startswith("pgbm/federated-dp/") and s.name != "pgbm/federated-dp/train" for s in steps)
    private = load_scenario(tmp_path / "pgbm" / "scenarios" / "fedavg-dp.toml")
    plain = load_scenario(tmp_path / "pgbm" / "scenarios" / "fedavg.toml")
    assert private.privacy.unit == "patient" and private.model == plain.model and private.data == plain.data
    assert "pgbm/federated-dp/train" not in [s.name for s in quality_suite.pgbm_steps(
        quality_suite.BUDGETS["quick"], data, tmp_path / "quick")]


def test_meddiff_bench_refuses_a_steps_filter_that_is_not_a_regular_expression(tmp_path):
    from meddiff.cli import main

    (tmp_path / "medmnist").mkdir()
    code = main(["bench", "--quick", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--steps", "pneumonia/("])
    assert code == 2 and not (tmp_path / "out").exists()


def test_the_anomaly_page_names_the_goals_and_which_methods_beat_the_baseline():
    from anomaly_detection import BASELINE, markdown

    seeds = [{"auroc": 0.9, "auprc": 0.8}, {"auroc": 0.8, "auprc": 0.7}]
    result = {"test_images": 10, "validation_images": 5, "anomalous_fraction": 0.5, "training": {},
              "rows": {BASELINE: {"seeds": [{"auroc": 0.7, "auprc": 0.6}], "seconds": 1.0},
                       "anoddpm, t* 0.5": {"seeds": seeds, "seconds": 2.0},
                       "pddpm, t* 0.5": {"seeds": [{"auroc": 0.6, "auprc": 0.5}], "seconds": 3.0}}}
    page = "\n".join(markdown({"sets": {"pneumonia": result}}))
    assert "| anoddpm, t* 0.5 | 0.850 ± 0.050 | 0.750 ± 0.050 | 2 |" in page
    assert "goal image AUROC >= 0.85: best 0.850 (anoddpm, t* 0.5) -> met" in page
    assert "anoddpm, t* 0.5 beats the baseline" in page and "pddpm, t* 0.5 does NOT beat the baseline" in page
    assert "Left out" not in page
    result["not_scored"] = {"test": 2, "validation": 0}
    page = "\n".join(markdown({"sets": {"pneumonia": result}}))
    assert "Left out for having none of the scored channels: 2 test and 0 validation images." in page


def test_the_anomaly_experiment_runs_the_benchmark_with_the_budgets_sizes(tmp_path):
    budget = quality_suite.BUDGETS["full"]
    (step,) = quality_suite.EXPERIMENTS["anomaly"](budget, DATA, tmp_path)
    argv = step.argv()
    assert argv[1].endswith("anomaly_detection.py") and step.done == tmp_path / "anomaly" / "results.json"
    assert argv[argv.index("--sets") + 1] == "pneumonia,breast,pgbm" and argv[argv.index("--seeds") + 1] == "3"


def test_the_gpu_budget_trains_every_model_until_its_held_out_loss_stops_improving(tmp_path):
    """Issue 26: PneumoniaMNIST at 64 px; the federations stop on a plateau ([federation] early stopping, the
    rounds a cap) and the pooled and single-site comparators evaluate once per federated round's worth of steps."""
    budget = quality_suite.BUDGETS["gpu"]
    steps = quality_suite.pneumonia_steps(budget, tmp_path / "data", tmp_path / "out")
    fedavg = load_scenario(tmp_path / "out" / "pneumonia" / "scenarios" / "fedavg.toml")
    assert fedavg.data.resolution == 64 and fedavg.recipe.batch_size == budget.batch_size
    assert fedavg.federation.early_stopping_patience == budget.early_stopping > 0
    central = next(s for s in steps if s.name == "pneumonia/central/train").argv()
    every = budget.sites * budget.pneumonia_local_steps
    assert central[central.index("--early-stopping") + 1] == str(budget.early_stopping)
    assert central[central.index("--eval-every") + 1] == str(every)
    quick = quality_suite.pneumonia_steps(quality_suite.BUDGETS["quick"], tmp_path / "data", tmp_path / "quick")
    assert "--early-stopping" not in next(s for s in quick if s.name == "pneumonia/central/train").argv()
    assert set(budget.experiments) == {"pneumonia", "pgbm"}


def test_meddiff_bench_knows_every_budget_of_the_suite(tmp_path, capfd):
    from meddiff.cli import main
    from meddiff.commands.bench import BUDGETS

    assert set(BUDGETS) == set(quality_suite.BUDGETS)
    assert main(["bench", "--budget", "gpu", "--report-only", "--out", str(tmp_path / "run"), "--results",
                 str(tmp_path / "RESULTS-gpu.md")]) == 2
    assert "suite.json" in capfd.readouterr().err and not (tmp_path / "RESULTS-gpu.md").exists()


def test_the_comparator_stops_early_on_its_sites_held_out_examples(tmp_path):
    scenario = quality_suite.write_scenario("phantom", tmp_path / "phantom.toml", "phantom-small", {
        "scenario": {"examples_per_site": 10, "resolution": 16}, "model": quality_suite.model_section((8, 16, 16))})
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality_train.py"), str(scenario), "--sites", "0",
                    "--steps", "6", "--early-stopping", "5", "--eval-every", "2", "--out", str(tmp_path / "site")],
                   check=True, cwd=REPO)
    summary = json.loads((tmp_path / "site" / "train.json").read_text())
    assert [at for at, _ in summary["early_stopping"]["history"]] == [2, 4, 6] and summary["total_steps"] == 6


@pytest.mark.parametrize("name", sorted(quality_suite.BUDGETS))
def test_every_budgets_scenarios_load(name, tmp_path):
    quality_suite.pneumonia_steps(quality_suite.BUDGETS[name], tmp_path / "data", tmp_path / "out")
    for scenario in (tmp_path / "out" / "pneumonia" / "scenarios").glob("*.toml"):
        load_scenario(scenario)  # a budget whose network does not fit the scenario is refused by name here


def test_runs_with_dp_at_the_sites_never_stop_on_the_sites_held_out_loss(tmp_path):
    """Choosing the round on private held-out examples would step outside what epsilon covers."""
    budget = quality_suite.BUDGETS["gpu"]
    quality_suite.pneumonia_steps(budget, tmp_path / "data", tmp_path / "out")
    for name in ("fedavg-dp", "fedavg-dp-part"):
        private = load_scenario(tmp_path / "out" / "pneumonia" / "scenarios" / f"{name}.toml").federation
        assert private.early_stopping_patience == 0 and private.rounds == budget.dp_rounds


@pytest.mark.realdata
def test_the_pgbm_studies_written_as_volumes_read_back_as_the_archives_slices(tmp_path):
    """benchmarks/pgbm_volumes_3d.py puts each study's slices back into one NIfTI volume: read by meddiff's own
    NIfTI loader, every voxel and mask is the archive's, in the archive's slice order."""
    from meddiff.common.config import DataConfig
    from meddiff.common.data.loader import load_dataset
    from pgbm_volumes_3d import CONTRASTS, write_volumes
    from tests.conftest import shared

    data = shared("pgbm").parent
    folders = write_volumes(data, tmp_path)
    archive = np.load(data / "pgbm" / "pgbm_t1_t1c_flair_t2_mask_128.npz")
    studies = np.asarray([str(s) for s in archive["study"]])
    config = DataConfig(channels=(*CONTRASTS, "mask"), slices=False)
    loaded = load_dataset(folders["test"], config, log_problems=False)
    assert len(loaded.examples) == 3
    for example in loaded.examples:
        study = next(s for s in dict.fromkeys(studies) if s.replace("/", "_").replace(" ", "-") == example.study)
        rows = np.flatnonzero(studies == study)
        for c, name in enumerate(CONTRASTS):
            assert np.array_equal(example.image[c], archive[name][rows].astype(np.float32)), (study, name)
        assert np.array_equal(example.image[4], archive["mask"][rows]), study
