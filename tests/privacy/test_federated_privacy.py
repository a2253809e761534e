"""Privacy at the server on the real Flower Simulation Engine (3 virtual hospitals, tiny model):
SecAgg+ gives the aggregate plain FedAvg gives; site-level DP adds noise calibrated to the sites aggregated and
its epsilon is what Flower's accountant says for those releases."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from meddiff.common.checkpoint import load_checkpoint
from meddiff.server.federation import BUDGET_STOP, initial_weights
from meddiff.server.secure_round import quantisation_levels
from meddiff.simulations.report import write_report
from meddiff.simulations.runner import simulate
from meddiff.simulations.scenario import Scenario, load_scenario, run_spec
from tests.conftest import TINY_MODEL_TABLES

SCENARIO = """
name = "privacy-at-the-server"
[scenario]
data = "phantom"
sites = 3
resolution = 16
examples_per_site = 8
split = "quantity"
alpha = 1.0
[federation]
rounds = 1
local_steps = 2
evaluate = false
""" + TINY_MODEL_TABLES


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    path = tmp_path_factory.mktemp("scenario") / "privacy.toml"
    path.write_text(SCENARIO)
    return load_scenario(path)


def _run(scenario: Scenario, run_dir, **federation) -> tuple[dict[str, torch.Tensor], list[dict], list[dict]]:
    store = simulate(replace(scenario, federation=replace(scenario.federation, **federation)), run_dir)
    state, _ = load_checkpoint(run_dir / "checkpoints" / f"round-{scenario.federation.rounds:04d}.pt")
    return state["model"], store.registry(), store.metrics()


def _vector(weights: dict[str, torch.Tensor]) -> np.ndarray:
    return torch.cat([v.reshape(-1).double() for v in weights.values()]).numpy()


@pytest.fixture(scope="module")
def plain(scenario, tmp_path_factory):
    return _run(scenario, tmp_path_factory.mktemp("plain"))


@pytest.mark.slow
def test_secagg_plus_aggregate_equals_plain_fedavg_of_the_same_updates(scenario, plain, tmp_path):
    # secagg_max_weight near the largest site (11 examples) keeps the quantised mean precise (docs/privacy.md)
    secure_model, registry, metrics = _run(scenario, tmp_path, secure_aggregation=True, secagg_max_weight=16.0)
    plain_model, _, plain_metrics = plain
    start = _vector(initial_weights(run_spec(scenario)))
    update = _vector(plain_model) - start
    assert np.linalg.norm(update) > 1e-3  # the round moved the model: the comparison means something
    difference = np.abs(_vector(secure_model) - _vector(plain_model))
    # quantisation: stochastic rounding to 2^29 levels over +-8 per site, over the sum of the weights n_i / 16;
    # then each mean is rounded to float32 (FedAvg's itself accumulates in float32): 2 ulp
    examples = sum(m["num-examples"] for m in plain_metrics[0]["train"].values())
    ulp = np.spacing(np.abs(_vector(plain_model)).astype(np.float32)).astype(np.float64)
    bound = 3 * 16 / quantisation_levels(3) / (examples / 16) + 2 * ulp
    worst = int(np.argmax(difference - bound))
    assert (difference <= bound).all(), (difference[worst], bound[worst], _vector(plain_model)[worst])
    assert np.linalg.norm(difference) < 0.01 * np.linalg.norm(update)
    assert registry[0]["aggregated"] and len(metrics[0]["train"]) == 3 and not metrics[0]["rejected"]
    # the sites' examples differ (quantity skew), so this is FedAvg's weighted mean, not a plain one
    assert len({m["num-examples"] for m in plain_metrics[0]["train"].values()}) > 1


@pytest.mark.slow
def test_site_level_dp_noise_is_calibrated_to_the_sites_aggregated(scenario, plain, tmp_path):
    noise, clip = 1e-3, 100.0  # a clip far above the update norms: the difference to FedAvg is the noise alone
    dp_model, registry, _ = _run(scenario, tmp_path, central_dp="server-clipping", dp_noise_multiplier=noise,
                                 dp_clipping_norm=clip, dp_population=3)
    difference = _vector(dp_model) - _vector(plain[0])
    expected_std = noise * clip / 3
    assert abs(difference.std() / expected_std - 1) < 0.05, (difference.std(), expected_std)
    assert abs(difference.mean()) < 0.05 * expected_std
    record = registry[0]["central_dp"]
    assert record["kind"] == "site-level DP at the server" and record["releases"] == 1
    assert record["clipping"] == "server" and record["delta"] == pytest.approx(1e-5)


@pytest.mark.slow
def test_site_level_dp_epsilon_is_flowers_accountant_and_the_budget_stops_the_run_at_its_best_round(
        scenario, tmp_path):
    """Each round's epsilon is a fresh Flower accountant's over the releases so far. dp_max_epsilon allows three
    releases of five rounds: the run stops before round 4 and, under early stopping, registers its best round as
    the run's model (as at the rounds' cap), round 3 evaluated then although evaluate_every = 2 skipped it; the
    report states the guarantee and why the run stopped."""
    from flwr.serverapp import (GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, RdpAccountant,
                                SamplingMethod)

    def accountant() -> RdpAccountant:
        return RdpAccountant(PrivacyConfig(1e-5, 3, NeighboringRelation.ADD_OR_REMOVE_ONE,
                                           SamplingMethod.NO_AMPLIFICATION))

    limit = accountant()
    for _ in range(3):
        limit.compose(GaussianPrivacyEvent(2.0, 3, 3))
    store = simulate(replace(scenario, federation=replace(
        scenario.federation, rounds=5, evaluate=True, evaluate_every=2, early_stopping_patience=3,
        central_dp="client-clipping", dp_noise_multiplier=2.0, dp_clipping_norm=0.5, dp_population=3,
        secure_aggregation=True, dp_max_epsilon=limit.get_epsilon(1e-5) * 1.001)), tmp_path)
    *released, final = store.registry()
    fresh = accountant()
    for entry in released:
        fresh.compose(GaussianPrivacyEvent(2.0, 3, 3))
        assert entry["central_dp"]["epsilon"] == pytest.approx(fresh.get_epsilon(1e-5), abs=1e-9)
        assert entry["central_dp"]["clipping"] == "site" and entry["aggregated"]
    assert [e["central_dp"]["releases"] for e in released] == [1, 2, 3] and len(store.metrics()) == 3
    assert [e["eval_loss"] is not None for e in released] == [False, True, False]
    stopping = final["early_stopping"]
    assert stopping["privacy_budget_reached"] and stopping["at_round"] == 3 and not stopping["stopped"]
    assert [at for at, _ in stopping["history"]] == [2, 3]  # round 3 evaluated when it became the last
    best = min(stopping["history"], key=lambda h: h[1])[0]
    assert final["round"] == best and final["path"] == released[best - 1]["path"]
    assert store.stopped() == {"after_round": 3, "why": BUDGET_STOP}
    page = write_report(tmp_path).read_text()  # the report states the guarantee: kind, epsilon, delta, accountant
    assert f"site-level DP at the server: epsilon {released[-1]['central_dp']['epsilon']:.4g} at delta 1e-05" in page
    assert "RDP (Flower, dp-accounting)" in page
    assert "Early stopping after round 3 (the next round would have passed the site-level DP budget" in page


def test_a_run_the_budget_ended_without_early_stopping_says_so_in_its_report():
    from meddiff.simulations.report import _stopping

    assert _stopping([{"round": 2}], {"after_round": 2, "why": BUDGET_STOP}) == \
        f" The run ended after round 2: {BUDGET_STOP}."
    assert _stopping([{"round": 2}]) == ""


def test_the_model_delivered_at_an_early_end_is_marked_final(scenario):
    from meddiff.server.delivery import delivery_metadata

    spec = run_spec(scenario)
    assert not delivery_metadata("run", 2, 4, {1}, spec, {}, {})["final"]
    assert delivery_metadata("run", 2, 4, {1}, spec, {}, {}, final=True)["final"]
    assert delivery_metadata("run", 4, 4, {1}, spec, {}, {})["final"]
