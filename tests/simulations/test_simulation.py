"""The Flower Simulation Engine (Ray) with 3 virtual hospitals: rounds are checkpointed and registered, the
global model is usable by `meddiff generate`, and a run resumed after a crash ends where an uninterrupted run does.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from meddiff.cli import main
from meddiff.common.checkpoint import load_checkpoint
from meddiff.server.federation import initial_weights
from meddiff.simulations.runner import simulate
from meddiff.simulations.scenario import Scenario, load_scenario, run_spec
from tests.conftest import TINY_MODEL_TABLES
from tests.server.test_tracking import assert_tracked_like_metrics_jsonl

TINY = """
name = "tiny"
[scenario]
data = "phantom"
sites = 3
missing_channels = [[], ["t2"], ["mask"]]
resolution = 16
examples_per_site = 8
[federation]
rounds = 3
local_steps = 3
strategy = "fedadam"
""" + TINY_MODEL_TABLES


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    path = tmp_path_factory.mktemp("scenario") / "tiny.toml"
    path.write_text(TINY)
    return load_scenario(path)


@pytest.fixture(scope="module")
def straight_run(scenario, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    return simulate(scenario, run_dir), run_dir


def _final(run_dir) -> dict[str, torch.Tensor]:
    state, _ = load_checkpoint(run_dir / "checkpoints" / "round-0003.pt")
    return state


@pytest.mark.slow
def test_every_round_is_checkpointed_registered_and_changes_the_model(scenario, straight_run):
    store, run_dir = straight_run
    registry = store.registry()
    assert [e["round"] for e in registry] == [1, 2, 3]
    assert all(len(e["sites"]) == 3 and e["aggregated"] for e in registry)
    metrics = store.metrics()
    assert all(len(m["train"]) == 3 and not m["rejected"] for m in metrics)
    assert all(0 < s["eval-loss"] < 3 for m in metrics for s in m["evaluate"].values())
    start = initial_weights(run_spec(scenario))
    final = _final(run_dir)
    assert any(not torch.equal(start[k], final["model"][k]) for k in start)
    assert final["strategy"]["m_t"] and final["strategy"]["v_t"]  # FedAdam's moments are saved for resume


@pytest.mark.slow
def test_the_global_model_generates_with_the_site_command(straight_run, tmp_path):
    _, run_dir = straight_run
    out = tmp_path / "gen"
    assert main(["generate", "--model", str(run_dir / "checkpoints" / "round-0003.pt"), "--n", "2",
                 "--steps", "2", "--out", str(out)]) == 0
    assert json.loads((out / "generate.json").read_text())["resolution"] == 16


@pytest.mark.slow
def test_a_run_resumed_after_a_crash_ends_like_the_uninterrupted_run(scenario, straight_run, tmp_path):
    _, straight_dir = straight_run
    simulate(replace(scenario, federation=replace(scenario.federation, rounds=3)), tmp_path)
    # the coordinator crashed after round 1: rounds 2 and 3 never reached the disk
    registry = (tmp_path / "registry.jsonl").read_text().splitlines()
    (tmp_path / "registry.jsonl").write_text(registry[0] + "\n")
    for r in (2, 3):
        (tmp_path / "checkpoints" / f"round-{r:04d}.pt").unlink()
    with pytest.raises(Exception, match="already holds a run"):
        simulate(scenario, tmp_path)  # never silently overwrites a run
    store = simulate(scenario, tmp_path, resume=True)
    assert [e["round"] for e in store.registry()] == [1, 2, 3]
    resumed, straight = _final(tmp_path), _final(straight_dir)
    for key in straight["model"]:
        # replies arrive in any order and float sums depend on it: equal to float32 rounding, not bitwise
        torch.testing.assert_close(resumed["model"][key], straight["model"][key], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(resumed["ema"][key], straight["ema"][key], atol=1e-5, rtol=1e-4)


def test_resuming_with_another_config_is_refused(scenario, tmp_path):
    from meddiff.common.checkpoint import CheckpointError
    from meddiff.server.run_store import RunStore

    store = RunStore(tmp_path)
    store.start({"settings": {"rounds": 3}}, resume=False)
    with pytest.raises(CheckpointError, match="differs"):
        store.start({"settings": {"rounds": 4}}, resume=True)


@pytest.mark.slow
@pytest.mark.realdata
def test_pneumonia_with_dirichlet_skew_runs_from_the_command_line(tmp_path):
    from tests.conftest import shared

    data = shared("medmnist/pneumoniamnist.npz")
    assert main(["simulate", "pneumonia", "--data", str(data), "--out", str(tmp_path / "run"), "--rounds", "1",
                 "--local-steps", "3"]) == 0
    sites = json.loads((tmp_path / "run" / "sites.json").read_text())
    shares = [s["labels"].get("class1", 0) / (s["train"] + s["holdout"]) for s in sites]
    assert len(sites) == 3 and max(shares) - min(shares) > 0.3  # label skew
    assert (tmp_path / "run" / "report.html").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_pneumonia_with_site_dp_at_epsilon_1_reports_epsilon_per_site_per_round(tmp_path, monkeypatch):
    """The strictest budget of the evidence suite's (1, 4, 10): each round's epsilon composes and stays within it;
    the ledger, the report and MLflow say the same."""
    from meddiff.privacy.ledger import PrivacyLedger
    from meddiff.server.run_store import RunStore
    from tests.conftest import shared

    data = shared("medmnist/pneumoniamnist.npz")
    scenario = tmp_path / "pneumonia-tiny.toml"  # the built-in pneumonia split, with the tests' tiny network
    scenario.write_text(f'name = "pneumonia-tiny"\n[scenario]\ndata = "{data}"\nsites = 3\nsplit = "dirichlet"\n'
                        f'alpha = 0.5\nscanner_shift = false\nresolution = 28\n[federation]\nmin_sites = 3\n'
                        + TINY_MODEL_TABLES)
    monkeypatch.setenv("MEDDIFF_TRACKING", "on")  # and each run is tracked in MLflow (checked below)
    epsilon = 1.0
    out = tmp_path / f"eps{epsilon:g}"
    assert main(["simulate", str(scenario), "--out", str(out), "--rounds", "2",
                 "--local-steps", "3", "--epsilon", str(epsilon)]) == 0
    rounds = RunStore(out).metrics()
    per_site = {}
    for entry in rounds:
        assert len(entry["train"]) == 3 and not entry["rejected"]
        for metrics in entry["train"].values():
            per_site.setdefault(int(metrics["partition-id"]), []).append(metrics["epsilon"])
            assert metrics["noise-multiplier"] > 0
    for site, values in per_site.items():
        assert len(values) == 2 and 0 < values[0] < values[1] <= epsilon  # composes, stays within target
        ledger = PrivacyLedger(out / "privacy" / f"site-{site}.sqlite")
        assert [e["status"] for e in ledger.entries()] == ["released", "released"]
        assert ledger.spent(ledger.entries()[-1]["delta"]) == pytest.approx(values[-1], abs=1e-9)
    page = (out / "report.html").read_text()
    assert "Example-level differential privacy" in page and (out / "figures" / "epsilon.png").exists()
    assert all(m["dp-patient-level"] == 0.0 for e in rounds for m in e["train"].values())  # MedMNIST: no ids
    assert_tracked_like_metrics_jsonl(out)  # the same numbers in MLflow, the model registered with its hash


@pytest.mark.slow
def test_early_stopping_ends_the_run_on_a_plateau_and_registers_the_best_round(tmp_path):
    """A learning rate so small that the model does not move: no round beats round 1 by 1 %, so with patience 2
    the run stops after round 3 of 6 and round 1's model is the run's model; resuming the stopped run trains
    nothing more."""
    path = tmp_path / "plateau.toml"
    path.write_text(TINY.replace("rounds = 3", "rounds = 6\nearly_stopping_patience = 2\n"
                                 "early_stopping_min_delta = 0.01").replace('"fedadam"', '"fedavg"')
                    .replace("[train]\n", "[train]\nlearning_rate = 1e-9\n"))
    scenario = load_scenario(path)
    store = simulate(scenario, tmp_path / "run")
    registry = store.registry()
    assert [e["round"] for e in registry] == [1, 2, 3, 1]
    assert registry[-1]["early_stopping"]["stopped"] and registry[-1]["early_stopping"]["at_round"] == 3
    assert registry[-1]["path"].endswith("round-0001.pt") and len(store.metrics()) == 3
    again = simulate(scenario, tmp_path / "run", resume=True)
    assert len(again.registry()) == 4 and len(again.metrics()) == 3
    from meddiff.simulations.report import write_report

    page = write_report(tmp_path / "run").read_text()
    assert "3 rounds. Early stopping after round 3 (the held-out loss had not improved for 2 evaluations)" in page
    assert "the run's model is round 1's" in page


@pytest.mark.slow
def test_a_fine_tuning_federation_sends_the_trained_part_and_keeps_the_frozen_rest(tmp_path):
    """[train] trainable = "decoder": each reply carries only the decoder (and the schema's layers); the
    coordinator puts it back into the global model, so the frozen encoder ends the run exactly as it started,
    even with site-level DP noise added to the aggregate at the server (so small here, std 3e-5, that the
    trained part's change is the training's)."""
    from meddiff.common.training.trainable import is_trained

    path = tmp_path / "part.toml"
    path.write_text(TINY.replace("rounds = 3", 'rounds = 2\ncentral_dp = "server-clipping"\n'
                                 "dp_noise_multiplier = 1e-4\ndp_clipping_norm = 1.0\ndp_population = 3")
                    .replace('"fedadam"', '"fedavg"').replace("[train]\n", '[train]\ntrainable = "decoder"\n'))
    scenario = load_scenario(path)
    store = simulate(scenario, tmp_path / "run")
    assert all(not m["rejected"] and len(m["train"]) == 3 for m in store.metrics())
    start = initial_weights(run_spec(scenario))
    final, _ = load_checkpoint(store.registry()[-1]["path"])
    frozen = [k for k in start if not is_trained(k, "decoder")]
    trained = [k for k in start if is_trained(k, "decoder")]
    assert frozen
    for k in frozen:
        assert torch.equal(final["model"][k], start[k]), k
        torch.testing.assert_close(final["ema"][k], start[k], atol=1e-6, rtol=0)  # d x + (1 - d) x: float rounding
    assert store.registry()[-1]["central_dp"]["releases"] == 2
    assert max((final["model"][k] - start[k]).abs().max() for k in trained) > 1e-4
