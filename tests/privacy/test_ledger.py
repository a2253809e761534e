"""The site's privacy ledger: its epsilon is Opacus's, a budget refuses the round that would pass it, and a
process killed mid-round leaves a ledger that never under-reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from meddiff.privacy.accounting import noise_for_run
from meddiff.privacy.ledger import BudgetExceeded, PrivacyLedger
from tests.conftest import REPO

DELTA, Q, STEPS = 1e-4, 0.05, 60


@pytest.mark.parametrize("kind,fresh", [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_ledger_epsilon_equals_a_fresh_opacus_accountant_fed_the_same_steps(tmp_path, kind, fresh):
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", kind)
    rounds = [(1.1, Q, STEPS), (1.1, Q, STEPS), (0.9, 2 * Q, STEPS // 2)]  # a second run with other settings
    accountant = fresh()
    for index, (noise, rate, steps) in enumerate(rounds, start=1):
        reservation = ledger.reserve("run-a" if index < 3 else "run-b", index, steps, rate, noise, DELTA, 1e9)
        ledger.released(reservation)
        for _ in range(steps):
            accountant.step(noise_multiplier=noise, sample_rate=rate)
        expected = accountant.get_epsilon(DELTA)
        assert reservation.epsilon_total == pytest.approx(expected, abs=1e-6)
        assert ledger.spent(DELTA) == pytest.approx(expected, abs=1e-6)
    assert [e["status"] for e in PrivacyLedger(tmp_path / "ledger.sqlite", kind).entries()] == ["released"] * 3


def test_a_budget_of_one_refuses_exactly_the_round_that_would_pass_it(tmp_path):
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    noise = noise_for_run(1.0, DELTA, Q, 4 * STEPS)  # a 4-round run planned to end just under epsilon 1
    accountant, refused_at = RDPAccountant(), None
    for server_round in range(1, 7):
        would_be = RDPAccountant()
        would_be.history = list(accountant.history) + [(noise, Q, STEPS)]
        try:
            ledger.reserve("run", server_round, STEPS, Q, noise, DELTA, budget=1.0)
        except BudgetExceeded as refusal:
            refused_at = server_round
            assert "past its budget of 1" in str(refusal) and "nothing was trained" in str(refusal)
            assert would_be.get_epsilon(DELTA) > 1.0
            break
        assert would_be.get_epsilon(DELTA) <= 1.0
        accountant = would_be
    assert refused_at == 5
    assert ledger.spent(DELTA) == pytest.approx(accountant.get_epsilon(DELTA), abs=1e-9) and ledger.spent(DELTA) <= 1.0
    assert [e["status"] for e in ledger.entries()] == ["reserved"] * 4 + ["refused"]
    with pytest.raises(BudgetExceeded):  # still refused after a restart: the ledger is on disk
        PrivacyLedger(tmp_path / "ledger.sqlite").reserve("run", 5, STEPS, Q, noise, DELTA, budget=1.0)


def test_a_cancelled_reservation_no_longer_counts(tmp_path):
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    kept = ledger.reserve("run", 1, STEPS, Q, 1.0, DELTA, 1e9)
    failed = ledger.reserve("run", 2, STEPS, Q, 1.0, DELTA, 1e9)
    ledger.cancel(failed, "out of memory before release")
    assert ledger.history() == [(1.0, Q, STEPS)] and failed.epsilon_total > kept.epsilon_total


KILLED_SITE = """
import sys, torch
from meddiff.client.site_data import SiteData
from meddiff.common.config import PrivacyConfig
from meddiff.common.data.training_set import load_training_set
from meddiff.client.round import train_round
from meddiff.common.messages import TrainInstruction
from meddiff.server.federation import initial_weights
from meddiff.simulations.scenario import load_scenario, run_spec
torch.set_num_threads(1)
spec = run_spec(load_scenario())
data = load_training_set("phantom", phantom_n=32).tensors
site = SiteData("site-k", data, None, PrivacyConfig(enabled=True, target_epsilon=5.0, noise_multiplicity=1),
                sys.argv[1])
train_round(spec, initial_weights(spec), site, TrainInstruction(1, 1, 100000), "run-k")
"""


def test_kill_9_during_a_round_leaves_a_ledger_that_never_under_reports(tmp_path):
    path = tmp_path / "ledger.sqlite"
    process = subprocess.Popen([sys.executable, "-c", KILLED_SITE, str(path)], cwd=REPO.parent,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if path.exists() and PrivacyLedger(path).entries():
                break
            time.sleep(0.5)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(3)  # well inside the round's training
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    ledger = PrivacyLedger(path)
    (entry,) = ledger.entries()
    assert entry["status"] == "reserved" and entry["steps"] == 100000
    full_round = RDPAccountant()
    full_round.history = [(entry["noise_multiplier"], entry["sample_rate"], entry["steps"])]
    assert ledger.spent(entry["delta"]) == pytest.approx(full_round.get_epsilon(entry["delta"]), abs=1e-9)
    partial = RDPAccountant()  # whatever the process managed before the kill is at most the full round
    partial.history = [(entry["noise_multiplier"], entry["sample_rate"], 50)]
    assert ledger.spent(entry["delta"]) >= partial.get_epsilon(entry["delta"])


def test_site_budget_command_prints_the_kind_epsilon_delta_and_what_is_left(tmp_path, capsys):
    from meddiff.cli import main

    config = tmp_path / "site.toml"
    config.write_text('site_id = "north"\n[data]\npath = "phantom"\n[privacy]\nenabled = true\ntarget_epsilon = 2.0\n')
    ledger = PrivacyLedger(tmp_path / ".meddiff-site" / "privacy" / "north.sqlite")
    spent = ledger.reserve("run", 1, STEPS, Q, 1.5, DELTA, 2.0).epsilon_total
    assert main(["site", "budget", "--config", str(config)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"example-level DP at site north: epsilon {spent:.4f} spent at delta {DELTA:.3g}" in out
    assert "RDP accountant" in out and f"budget 2, left {2 - spent:.4f}" in out


def test_a_second_run_is_calibrated_to_what_the_first_left_of_the_budget_and_a_third_is_refused_at_once(tmp_path):
    """Two runs at target epsilon 10 under a lifetime budget of 12: the second run's noise is raised so that it ends
    within the budget (at its own noise it would pass 12 half way); a third run is refused before anything trains."""
    from meddiff.client.round import reserve_round
    from meddiff.client.site_data import SiteData
    from meddiff.common.config import PrivacyConfig
    from meddiff.common.data.training_set import load_training_set
    from meddiff.common.messages import TrainInstruction
    from meddiff.privacy.accounting import epsilon_spent
    from meddiff.privacy.units import privacy_units

    privacy = PrivacyConfig(enabled=True, target_epsilon=10.0, budget_epsilon=12.0, delta=DELTA)
    data = load_training_set("phantom", phantom_n=160).tensors  # q = 0.05 at batch 8
    site = SiteData("site-b", data, None, privacy, tmp_path / "ledger.sqlite")
    units = privacy_units(data, privacy, 8)

    def run(name: str) -> list[float]:
        noises = []
        for server_round in (1, 2, 3):
            ledger, reservation, noise, _ = reserve_round(site, units, TrainInstruction(server_round, 3, STEPS),
                                                          name, privacy.target_epsilon, "all")
            ledger.released(reservation)
            noises.append(noise)
        return noises

    first = run("run-a")
    one_run = [(first[0], units.sample_rate, STEPS)] * 3
    assert epsilon_spent(one_run, DELTA) == pytest.approx(10.0, abs=0.02)
    assert epsilon_spent(one_run * 2, DELTA) > 12.0  # the second run at the first one's noise would pass the budget
    second = run("run-b")
    assert len(set(second)) == 1 and second[0] > first[0]
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    fresh = RDPAccountant()
    fresh.history = one_run + [(second[0], units.sample_rate, STEPS)] * 3
    assert ledger.spent(DELTA) == pytest.approx(fresh.get_epsilon(DELTA), abs=1e-9)
    assert 11.98 <= ledger.spent(DELTA) <= 12.0
    with pytest.raises(BudgetExceeded, match="past its budget of 12"):
        run("run-c")
    assert [e["status"] for e in ledger.entries()] == ["released"] * 6 + ["refused"]


def test_a_run_resumed_under_a_new_run_id_keeps_its_noise_and_ends_within_the_budget(tmp_path):
    """A coordinator restarted after a crash resumes at round 3 of 3 under a new Flower run id: the interrupted
    attempt's two rounds plus the resumed one are the planned run, so the noise is not raised."""
    from meddiff.client.round import reserve_round
    from meddiff.client.site_data import SiteData
    from meddiff.common.config import PrivacyConfig
    from meddiff.common.data.training_set import load_training_set
    from meddiff.common.messages import TrainInstruction
    from meddiff.privacy.units import privacy_units

    privacy = PrivacyConfig(enabled=True, target_epsilon=4.0, delta=DELTA)  # budget = target
    data = load_training_set("phantom", phantom_n=160).tensors
    site = SiteData("site-r", data, None, privacy, tmp_path / "ledger.sqlite")
    units = privacy_units(data, privacy, 8)
    noises = []
    for server_round, run in ((1, "attempt-1"), (2, "attempt-1"), (3, "attempt-2")):
        ledger, reservation, noise, _ = reserve_round(site, units, TrainInstruction(server_round, 3, STEPS), run,
                                                      privacy.target_epsilon, "all")
        ledger.released(reservation)
        noises.append(noise)
    assert noises == [noise_for_run(4.0, DELTA, units.sample_rate, 3 * STEPS)] * 3
    assert 3.98 <= PrivacyLedger(tmp_path / "ledger.sqlite").spent(DELTA) <= 4.0


def test_a_site_with_few_units_is_warned_that_the_default_delta_is_large(tmp_path, caplog):
    from meddiff.client.round import reserve_round
    from meddiff.client.site_data import SiteData
    from meddiff.common.config import PrivacyConfig
    from meddiff.common.data.training_set import load_training_set
    from meddiff.common.messages import TrainInstruction
    from meddiff.privacy.units import privacy_units

    data = load_training_set("phantom", phantom_n=20).tensors
    for privacy, warned in ((PrivacyConfig(enabled=True), True), (PrivacyConfig(enabled=True, delta=1e-5), False)):
        site = SiteData("site-s", data, None, privacy, tmp_path / f"ledger-{warned}.sqlite")
        caplog.clear()
        with caplog.at_level("WARNING", logger="meddiff.client.round"):
            reserve_round(site, privacy_units(data, privacy, 4), TrainInstruction(1, 1, 10), "run", 10.0, "all")
        assert ("delta 0.005 = 1 / (10 x 20 examples) is large" in caplog.text) is warned
