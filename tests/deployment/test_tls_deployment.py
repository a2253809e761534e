"""A real SuperLink and SuperNodes on 127.0.0.1 with TLS and SuperNode authentication: two rounds of meddiff,
checkpointed and registered, the final model delivered to both sites' stores and every message in their audit
logs; a SuperNode with an unregistered key is refused. Every process is stopped by PID.
"""

from __future__ import annotations

import pytest
import torch

from meddiff.client.audit import AuditLog
from meddiff.client.model_store import ModelStore
from meddiff.client.site_guard import ALLOWED_METRICS
from meddiff.client.site_paths import audit_path, models_dir, site_state_dir
from meddiff.common.checkpoint import load_checkpoint
from meddiff.common.diffusion.loading import load_model
from meddiff.server.deployment import online_nodes, submit_run, wait_for
from meddiff.server.federation import initial_weights
from meddiff.server.federation_config import load_federation_config
from meddiff.server.run_store import RunStore
from tests.deployment.loopback import Federation


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_rounds_over_tls_with_authenticated_sites_and_a_refused_stranger(tmp_path):
    federation = Federation(tmp_path, ["site-a", "site-b"], strangers=("stranger",))
    with federation.group:  # every process is stopped by its PID on the way out, also on failure
        federation.start()
        federation.start_site("stranger", max_retries=3)  # holds a key the coordinator never registered
        wait_for(lambda: "Failed to activate SuperNode" in federation.log("stranger").read_text(), 120,
                 "the SuperLink to refuse the unregistered key")
        assert online_nodes(federation.home) == 2  # the stranger never joined
        config = federation.config("run", rounds=2, steps=3, evaluate=True)
        result = submit_run(federation.home, config, resume=False, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    spec = load_federation_config(config)
    registry = RunStore(spec.run_dir).registry()
    assert [e["round"] for e in registry] == [1, 2] and all(len(e["sites"]) == 2 for e in registry)
    rounds = RunStore(spec.run_dir).metrics()  # each site's worker ran its rounds, and each part was timed
    assert all(m.get("site-worker") == 1 and m["time-to-handler"] > 0 for r in rounds for m in r["train"].values())
    assert all(set(r["timing"]["reply-transfer"]) == set(r["train"]) for r in rounds)
    assert all("round 2: 3 steps, loss" in federation.log(site).read_text() for site in federation.sites)
    assert all(e["eval_loss"] is not None for e in registry)
    final, _ = load_checkpoint(registry[-1]["path"])
    start = initial_weights(spec.spec)
    assert any(not torch.equal(start[k], final["model"][k]) for k in start)

    # model delivery: each site's store holds the final global model (and its EMA), equal to the server's
    for site in federation.sites:
        state = site_state_dir(federation.site_config(site))
        stored = ModelStore(models_dir(state)).entries()
        assert [(e["round"], e["final"]) for e in stored] == [(2, True)], stored
        model, meta = load_checkpoint(stored[-1]["path"])
        assert all(torch.equal(model["model"][k], final["model"][k]) for k in final["model"])
        assert all(torch.equal(model["ema"][k], final["ema"][k]) for k in final["ema"])
        assert meta["delivery"]["rounds"] == 2 and len(meta["delivery"]["sites"]) == 2
        assert load_model(stored[-1]["path"]).resolution == spec.spec.resolution  # the task commands can read it
        # the audit log: every round's sent arrays and metrics, an intact chain
        audit = AuditLog(audit_path(state))
        assert audit.verify().ok
        sent = [r for r in audit.records() if r["event"] == "sent" and r["message_type"] == "train"]
        assert sorted(r["round"] for r in sent) == [1, 2]
        for record in sent:
            weights = record["arrays"]["arrays/weights"]  # the packed model: float32 values + the npy header
            assert 0 <= weights["bytes"] - 4 * weights["shape"][0] < 256 and weights["dtype"] == "float32"
            assert set(record["metrics"]) <= ALLOWED_METRICS and "train-loss" in record["metrics"]
            assert record["peer"] == federation.address


@pytest.mark.parametrize("address", ["10.0.0.5:9092", "hospital.example.org:9092", "0.0.0.0:9092"])
def test_insecure_is_refused_off_loopback(address):
    from meddiff.common.config import ConfigError
    from meddiff.server.deployment import require_loopback_for_insecure

    with pytest.raises(ConfigError, match="loopback"):
        require_loopback_for_insecure(address, insecure=True)
    require_loopback_for_insecure(address, insecure=False)
    require_loopback_for_insecure("127.0.0.1:9092", insecure=True)


def test_site_start_checks_its_config_before_connecting(tmp_path, capsys):
    from meddiff.cli import main

    (tmp_path / "site.toml").write_text('site_id = "a"\n[data]\npath = ""\n')
    assert main(["site", "start", "--config", str(tmp_path / "site.toml"), "--superlink", "127.0.0.1:1",
                 "--insecure"]) == 2
    assert "[data] path is empty" in capsys.readouterr().err
    (tmp_path / "site.toml").write_text('site_id = "a"\n[data]\npath = "phantom"\n')
    assert main(["site", "start", "--config", str(tmp_path / "site.toml"), "--superlink", "10.1.1.1:9092",
                 "--insecure"]) == 2
    assert "loopback" in capsys.readouterr().err
