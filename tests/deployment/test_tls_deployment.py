"""A real SuperLink and SuperNodes on 127.0.0.1 with TLS and SuperNode authentication: two rounds of meddiff,
checkpointed and registered; a SuperNode with an unregistered key is refused. Every process is stopped by PID.
"""

from __future__ import annotations

import pytest
import torch

from meddiff.common.checkpoint import load_checkpoint
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
    assert all(e["eval_loss"] is not None for e in registry)
    final, _ = load_checkpoint(registry[-1]["path"])
    start = initial_weights(spec.spec)
    assert any(not torch.equal(start[k], final["model"][k]) for k in start)


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
