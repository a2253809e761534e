"""The site daemon (`meddiff site start`) on the real deployment engine: SIGTERM during DP training leaves the
model store, privacy ledger and audit log consistent, and the restarted daemon takes part in the next round."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
import torch

from meddiff.client.audit import AuditLog
from meddiff.client.model_store import ModelStore
from meddiff.client.site_paths import audit_path, daemon_path, ledger_path, models_dir, site_state_dir
from meddiff.common.checkpoint import load_checkpoint
from meddiff.privacy.ledger import PrivacyLedger
from meddiff.server.deployment import BIN, flower_env, free_port, online_nodes, register_site, submit_run, wait_for
from meddiff.server.run_store import RunStore
from tests.deployment.loopback import Federation


def _daemon_command(federation: Federation, site: str, log_file) -> list[str]:
    return [str(BIN / "meddiff"), "site", "start", "--config", str(federation.site_config(site)),
            "--superlink", federation.address, "--ca", str(federation.credentials.ca),
            "--key", str(federation.credentials.site_key(site)), "--port", str(free_port()), "--threads", "1",
            "--log-file", str(log_file)]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigterm_during_training_leaves_a_consistent_site_and_a_restart_rejoins(tmp_path):
    federation = Federation(tmp_path, ["site-a", "site-b"])
    config_a = federation.site_config("site-a")
    state = site_state_dir(config_a)
    json_log = tmp_path / "logs" / "site-a.jsonl"
    with federation.group:
        federation.start_superlink()
        for site in federation.sites:
            register_site(federation.home, federation.credentials.folder / "sites" / f"{site}.pub", site)
        federation.start_site("site-b")
        config_a.parent.mkdir(parents=True, exist_ok=True)
        config_a.write_text('site_id = "site-a"\n[data]\npath = "phantom"\n'
                            '[privacy]\nenabled = true\ntarget_epsilon = 10.0\nnoise_multiplicity = 1\n')
        command = _daemon_command(federation, "site-a", json_log)
        daemon = federation.group.start("site-a", command, flower_env(tmp_path / "daemon"), federation.log("site-a"))
        wait_for(lambda: online_nodes(federation.home) == 2, 120, "both sites online")
        assert json.loads(daemon_path(state).read_text())["state"] == "running"

        run = federation.config("run", rounds=2, steps=200)
        outcome: dict = {}
        thread = threading.Thread(target=lambda: outcome.update(
            result=submit_run(federation.home, run, resume=False, timeout=900)), daemon=True)
        thread.start()
        ledger = ledger_path(state, "site-a")
        wait_for(lambda: ledger.exists() and any(e["status"] == "reserved" for e in PrivacyLedger(ledger).entries()),
                 300, "site-a to start DP training in round 1", every=0.2)
        os.kill(daemon.pid, signal.SIGTERM)  # the hospital's service manager stops the daemon
        assert daemon.wait(90) == 0

        # consistent after the stop: the audit chain, the ledger (the abandoned round stays counted), the store
        audit = AuditLog(audit_path(state))
        assert audit.verify().ok and audit.records()[-1]["event"] == "daemon-stopped"
        entries = PrivacyLedger(ledger).entries()
        # the abandoned round released nothing: its reservation is cancelled (or, if the ClientApp had no chance to
        # say so, stays reserved and counted); either way the ledger agrees with what left the site
        assert len(entries) == 1 and entries[0]["status"] in ("cancelled", "reserved")
        assert not any(r["event"] == "sent" and r["message_type"] == "train" for r in audit.records())
        assert json.loads(daemon_path(state).read_text())["state"] == "stopped"
        assert not any(p.name.startswith(".") for p in models_dir(state).glob("*"))  # no half-written model

        federation.group.start("site-a-restarted", command, flower_env(tmp_path / "daemon"),
                               federation.log("site-a-restarted"))
        thread.join(900)
        assert outcome["result"].returncode == 0, outcome["result"].stdout[-2000:] + outcome["result"].stderr[-2000:]

    registry = RunStore(tmp_path / "run").registry()
    assert [e["round"] for e in registry] == [1, 2], outcome["result"].stdout[-4000:]
    assert len(registry[-1]["sites"]) == 2  # the restarted site took part in round 2
    records = AuditLog(audit_path(state)).records()
    assert AuditLog(audit_path(state)).verify().ok
    assert any(r["event"] == "sent" and r["message_type"] == "train" and r["round"] == 2 for r in records)
    statuses = [e["status"] for e in PrivacyLedger(ledger_path(state, "site-a")).entries()]
    assert statuses[0] in ("cancelled", "reserved") and statuses[-1] == "released"
    stored = ModelStore(models_dir(state)).entries()
    final, _ = load_checkpoint(registry[-1]["path"])
    delivered, _ = load_checkpoint(stored[-1]["path"])
    assert stored[-1]["round"] == 2 and all(torch.equal(final["model"][k], delivered["model"][k]) for k in final["model"])
    lines = [json.loads(line) for line in json_log.read_text().splitlines()]  # the structured log
    assert {"time", "level", "source", "message"} <= set(lines[0]) and any(r["source"] == "daemon" for r in lines)
