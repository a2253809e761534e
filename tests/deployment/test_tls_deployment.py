"""A real SuperLink and SuperNodes on 127.0.0.1 with TLS and SuperNode authentication: two rounds of meddiff,
checkpointed and registered; a SuperNode with an unregistered key is refused. Every process is stopped by PID.
"""

from __future__ import annotations

import pytest
import torch

from meddiff.common.certs import create_credentials
from meddiff.common.checkpoint import load_checkpoint
from meddiff.server.deployment import (Credentials, ProcessGroup, flower_env, free_port, online_nodes,
                                       register_site, submit_run, superlink_command, supernode_command, wait_for,
                                       write_cli_config)
from meddiff.server.federation import initial_weights
from meddiff.server.federation_config import load_federation_config
from meddiff.server.run_store import RunStore

FEDERATION = """
run_dir = "run"
[schema]
channels = ["t1", "t2", "flair", "ct", "mask"]
class_names = ["healthy", "lesion"]
resolution = 16
[federation]
rounds = 2
local_steps = 3
min_sites = 2
timeout = 300
[train]
batch_size = 4
[model]
channels = [8, 16]
attention_levels = [false, true]
num_head_channels = 8
norm_num_groups = 8
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_rounds_over_tls_with_authenticated_sites_and_a_refused_stranger(tmp_path):
    credentials = Credentials(tmp_path / "certs")
    create_credentials(credentials.folder, ["127.0.0.1", "localhost"], ["site-a", "site-b", "stranger"])
    (tmp_path / "federation.toml").write_text(FEDERATION)
    home, port = tmp_path / "coordinator", free_port()
    address = f"127.0.0.1:{port}"
    with ProcessGroup() as group:  # every process is stopped by its PID on the way out, also on failure
        group.start("superlink", superlink_command("127.0.0.1", port, tmp_path / "state.db", credentials),
                    flower_env(home), tmp_path / "logs" / "superlink.log")
        write_cli_config(home, address, credentials.ca)
        for site in ("site-a", "site-b"):  # only these two are registered
            wait_for(lambda: _try_register(home, credentials, site), 60, f"registering {site}")
            (tmp_path / f"{site}.toml").write_text(f'site_id = "{site}"\n[data]\npath = "phantom"\n')
            group.start(site, supernode_command(address, free_port(), tmp_path / f"{site}.toml", credentials.ca,
                                                credentials.site_key(site), threads=1),
                        flower_env(tmp_path / site), tmp_path / "logs" / f"{site}.log")
        stranger = group.start("stranger", supernode_command(address, free_port(), tmp_path / "site-a.toml",
                                                             credentials.ca, credentials.site_key("stranger"),
                                                             max_retries=3),
                               flower_env(tmp_path / "stranger"), tmp_path / "logs" / "stranger.log")
        wait_for(lambda: online_nodes(home) == 2, 120, "both registered sites online")
        wait_for(lambda: "Failed to activate SuperNode" in (tmp_path / "logs" / "stranger.log").read_text(), 120,
                 "the SuperLink to refuse the unregistered key")
        assert online_nodes(home) == 2  # the stranger never joined

        result = submit_run(home, tmp_path / "federation.toml", resume=False, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    config = load_federation_config(tmp_path / "federation.toml")
    registry = RunStore(config.run_dir).registry()
    assert [e["round"] for e in registry] == [1, 2] and all(len(e["sites"]) == 2 for e in registry)
    final, _ = load_checkpoint(registry[-1]["path"])
    start = initial_weights(config.spec)
    assert any(not torch.equal(start[k], final["model"][k]) for k in start)


def _try_register(home, credentials, site) -> bool:
    try:
        register_site(home, credentials.folder / "sites" / f"{site}.pub", site)
        return True
    except RuntimeError:
        return False


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
