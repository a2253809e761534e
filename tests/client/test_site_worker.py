"""The site worker (client/site_worker.py) as a real process on a real Unix socket: it trains exactly what the
ClientApp would have trained in its own process, keeps serving after a failed round, marks the DP release only
when told, is refused to a ClientApp of other code, and leaves no socket or key behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from meddiff.client import worker_channel
from meddiff.client.local_runner import LocalRunner
from meddiff.client.site_loading import site_from_node_config
from meddiff.client.site_paths import ledger_path, site_state_dir
from meddiff.client.worker_channel import WorkerFailed, WorkerRunner, socket_and_key, worker_command
from meddiff.common.data.phantom import SCHEMA as PHANTOM_SCHEMA
from meddiff.common.messages import TrainInstruction
from meddiff.common.run_spec import RunSpec
from meddiff.common.specs import ModelSpec, RecipeSpec
from meddiff.common.wire import vector_of
from meddiff.privacy.ledger import PrivacyLedger
from meddiff.server.federation import initial_weights

SMALL = ModelSpec(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8)
SPEC = RunSpec(PHANTOM_SCHEMA, 16, SMALL, RecipeSpec(batch_size=4), "federated")


def _config(server_round: int = 1, rounds: int = 2, steps: int = 3) -> dict:
    return {**SPEC.to_config(), **TrainInstruction(server_round, rounds, steps).to_config()}


def _start(tmp_path):
    """A phantom site.toml and its worker process (stopped by its PID on the way out)."""
    config = tmp_path / "site" / "site.toml"
    config.parent.mkdir()
    config.write_text('site_id = "site-w"\n[data]\npath = "phantom"\n')
    process = subprocess.Popen(worker_command(config, threads=1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    socket_path, _ = socket_and_key(site_state_dir(config))
    deadline = time.monotonic() + 120
    while not socket_path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert socket_path.exists(), process.stdout.read() if process.poll() is not None else "no socket after 120 s"
    try:
        yield config, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory):
    """One worker for the tests that leave it running (starting one costs ~7 s of imports)."""
    yield from _start(tmp_path_factory.mktemp("worker"))


@pytest.fixture
def site(shared_site):
    config, _ = shared_site
    config.write_text('site_id = "site-w"\n[data]\npath = "phantom"\n')
    return shared_site


@pytest.fixture
def own_site(tmp_path):
    yield from _start(tmp_path)


def _node(config) -> dict:
    return {"site-config": str(config), "threads": 1}


def test_the_worker_trains_what_the_clientapp_would_have_trained(site):
    config, _ = site
    start = vector_of(initial_weights(SPEC), SPEC.weight_layout())
    worker = WorkerRunner.connect(site_state_dir(config))
    assert worker is not None
    remote = worker.train(_config(), start, _node(config), "run-1")
    remote.released()
    local = LocalRunner(site_from_node_config).train(_config(), start, _node(config), "run-1")
    assert remote.metrics["site-worker"] == 1 and remote.metrics["steps"] == 3
    assert not np.array_equal(remote.weights, start)
    np.testing.assert_allclose(remote.weights, local.weights, rtol=0, atol=1e-6)
    assert remote.metrics["train-loss"] == pytest.approx(local.metrics["train-loss"], abs=1e-6)
    # a second round finds the site's data in memory
    again = worker.train(_config(server_round=2), remote.weights, _node(config), "run-1")
    again.released()
    assert again.metrics["time-data"] < 0.5 and again.metrics["steps"] == 3
    metrics = worker.evaluate(_config(), remote.weights, _node(config))
    assert metrics["eval-loss"] > 0 and metrics["held-out"] == 1


def test_a_failed_round_is_answered_and_the_next_one_is_served(site):
    config, process = site
    worker = WorkerRunner.connect(site_state_dir(config))
    start = vector_of(initial_weights(SPEC), SPEC.weight_layout())
    with pytest.raises(WorkerFailed, match="packed weights hold 3 values"):
        worker.train(_config(), np.zeros(3, np.float32), _node(config), "run-1")
    assert process.poll() is None
    result = worker.train(_config(), start, _node(config), "run-1")
    result.released()
    assert result.metrics["steps"] == 3


def test_the_dp_release_is_marked_only_when_the_clientapp_says_so(site):
    config, _ = site
    config.write_text('site_id = "site-w"\n[data]\npath = "phantom"\n'
                      '[privacy]\nenabled = true\ntarget_epsilon = 10.0\nunit = "example"\n')
    worker = WorkerRunner.connect(site_state_dir(config))
    start = vector_of(initial_weights(SPEC), SPEC.weight_layout())
    result = worker.train(_config(), start, _node(config), "run-dp")
    ledger = PrivacyLedger(ledger_path(site_state_dir(config), "site-w"))
    assert result.metrics["epsilon"] > 0 and [e["status"] for e in ledger.entries() if e["run"] == "run-dp"] == [
        "reserved"]
    result.released()
    deadline = time.monotonic() + 30
    while ledger.entries()[0]["status"] != "released" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [e["status"] for e in ledger.entries()] == ["released"]


def test_a_clientapp_of_other_code_or_without_the_key_does_not_use_the_worker(site, monkeypatch):
    config, _ = site
    state = site_state_dir(config)
    socket_path, key_path = socket_and_key(state)
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600 and stat.S_IMODE(key_path.stat().st_mode) == 0o600
    monkeypatch.setattr(worker_channel, "app_hash", lambda: "0" * 64)  # as after an upgrade of meddiff on disk
    assert WorkerRunner.connect(state) is None
    monkeypatch.undo()
    assert WorkerRunner.connect(state) is not None
    key = key_path.read_bytes()
    key_path.write_bytes(b"not the key")
    try:
        assert WorkerRunner.connect(state) is None
    finally:
        key_path.write_bytes(key)


def test_sigterm_removes_the_socket_and_key(own_site):
    config, process = own_site
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(30) == 0
    socket_path, key_path = socket_and_key(site_state_dir(config))
    assert not socket_path.exists() and not key_path.exists()
    assert WorkerRunner.connect(site_state_dir(config)) is None


def test_a_worker_for_a_missing_site_config_says_so_in_one_line(tmp_path):
    out = subprocess.run(worker_command(tmp_path / "nowhere" / "site.toml"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "site worker not started" in out.stderr and "Traceback" not in out.stderr


def test_the_clientapp_imports_neither_torch_nor_monai():
    code = ("import sys, meddiff.client.deploy_app; "
            "print(sorted(m for m in ('torch', 'monai', 'opacus') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
