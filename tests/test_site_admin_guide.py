"""docs/site-admin.md is followed end to end as a new user would: its walk-through block runs as written (a
coordinator and two hospitals on 127.0.0.1 with TLS), and what it promises is then checked on disk."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from meddiff.client.audit import AuditLog
from meddiff.client.model_store import ModelStore
from meddiff.common.checkpoint import load_checkpoint
from meddiff.server.deployment import free_port
from meddiff.server.run_store import RunStore

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "site-admin.md"


def walkthrough() -> str:
    text = GUIDE.read_text()
    block = re.search(r"<!-- walkthrough:start -->\s*```bash\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S)
    assert block, f"{GUIDE} has no walk-through block"
    return block.group(1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_site_admin_guide_walkthrough_runs_as_written(installed_wheel, tmp_path):
    """From the wheel a hospital installs (tests/conftest.py installed_wheel), not the source tree."""
    port = free_port()
    while any(free_port() == p for p in (port + 1, port + 2)):  # the guide uses PORT, PORT+1 and PORT+2
        port = free_port()
    env = {**os.environ, "PORT": str(port), "PATH": f"{installed_wheel}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    # its own process group: on a failure or a timeout the coordinator and both daemons it started are ended too
    shell = subprocess.Popen(["bash", "-c", walkthrough()], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = shell.communicate(timeout=840)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGTERM)
            try:
                shell.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(shell.pid, signal.SIGKILL)
    coordinator_log = tmp_path / "coordinator.log"
    assert shell.returncode == 0, (out[-3000:] + err[-3000:] +
                                   (coordinator_log.read_text()[-2000:] if coordinator_log.exists() else ""))
    assert "audit chain intact" in out and "models delivered to this site" in out
    registry = RunStore(tmp_path / "run").registry()
    final, _ = load_checkpoint(registry[-1]["path"])
    for site in ("hospital-a", "hospital-b"):
        state = tmp_path / site / ".meddiff-site"
        stored = ModelStore(state / "models").entries()
        model, _ = load_checkpoint(stored[-1]["path"])
        assert stored[-1]["final"] and all(torch.equal(model["model"][k], final["model"][k]) for k in final["model"])
        assert AuditLog(state / "audit.jsonl").verify().ok
    assert (tmp_path / "hospital-a" / "segmentation" / "segment.json").exists()
    assert "not running (last state: stopped)" in out  # the daemons exited cleanly on SIGTERM
