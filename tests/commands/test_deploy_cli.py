"""The coordinator's and the site admin's first commands through the real parser, quickly: credentials, a
coordinator that starts and stops its SuperLink when no site comes, and a fresh site's everyday commands."""

from __future__ import annotations

import subprocess

from meddiff.cli import main
from meddiff.server.deployment import free_port


def superlinks_on(port: int) -> list[str]:
    found = subprocess.run(["pgrep", "-af", "flower-superlink"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if f"--port {port}" in line]


def test_certs_then_a_coordinator_that_no_site_joins_stops_its_superlink(tmp_path, capsys):
    certs = tmp_path / "certs"
    assert main(["certs", "--out", str(certs), "--hosts", "127.0.0.1", "--sites", "site-a,site-b"]) == 0
    assert all((certs / name).is_file() for name in ("ca.crt", "server.pem", "server.key", "sites/site-a.pub"))
    assert main(["certs", "--out", str(certs)]) == 2  # an existing CA is never replaced
    assert "nothing was overwritten" in capsys.readouterr().err
    (tmp_path / "federation.toml").write_text(f'run_dir = "{tmp_path / "run"}"\n[schema]\nchannels = ["t1"]\n'
                                              "resolution = 16\n[federation]\nrounds = 1\nmin_sites = 2\n")
    port = free_port()
    code = main(["coordinator", "start", "--config", str(tmp_path / "federation.toml"), "--certs", str(certs),
                 "--port", str(port), "--wait-for-sites", "2"])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "registered 2 site keys: ['site-a', 'site-b']" in captured.out
    assert "0 of the 2 sites (min_sites) came online within 2 s; the SuperLink was stopped" in captured.err
    assert superlinks_on(port) == []


def test_a_fresh_site_init_status_models_audit_and_budget(tmp_path, capsys):
    config = tmp_path / "hospital" / "site.toml"
    assert main(["site", "init", "--out", str(config), "--site-id", "hospital-a", "--data", "phantom"]) == 0
    assert f"meddiff site check PATH --config {config}" in capsys.readouterr().out
    assert main(["site", "init", "--out", str(config)]) == 2  # never overwritten
    capsys.readouterr()
    assert main(["site", "status", "--config", str(config)]) == 0
    status = capsys.readouterr().out
    assert "site hospital-a" in status and "not running (last state: never started)" in status
    assert "DP off at this site" in status and "none delivered yet" in status
    assert main(["site", "models", "--config", str(config)]) == 0
    assert main(["site", "audit", "--config", str(config)]) == 0
    assert main(["site", "budget", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "no model in" in out and "no audit log" in out and "no privacy ledger" in out
