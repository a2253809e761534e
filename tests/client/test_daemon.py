"""The site daemon's supervision, with a stand-in for the SuperNode that exits at once (as Flower's does when the
coordinator is not up yet): it is started again with a backoff until SIGTERM, and then the daemon exits 0."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from meddiff.client.audit import AuditLog
from meddiff.client.daemon import SiteDaemon
from meddiff.client.site_paths import audit_path, daemon_path


def _run_until_sigterm(daemon: SiteDaemon, after: float) -> int:
    """Run the daemon in the foreground as a service would, and send it SIGTERM after ``after`` seconds."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    timer = threading.Timer(after, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        return daemon.run()
    finally:
        timer.cancel()
        for s, handler in previous.items():  # as they were (SIGINT is ignored in a background job, not default)
            signal.signal(s, handler)


def test_an_exited_supernode_is_started_again_until_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr("meddiff.client.daemon.RESTART_FIRST_DELAY", 0.2)
    marker = tmp_path / "starts"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); print('ERROR :     Exit Code: 305')"]
    log_file = tmp_path / "site.jsonl"
    daemon = SiteDaemon(command, dict(os.environ), tmp_path / "state", "127.0.0.1:1", log_file)
    assert _run_until_sigterm(daemon, after=2.0) == 0
    assert len(marker.read_text()) >= 3  # started, exited, started again (0.2 s, 0.4 s, 0.8 s ...)
    state = json.loads(daemon_path(tmp_path / "state").read_text())
    assert state["state"] == "stopped" and state["restarts"] >= 2
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(r["level"] == "ERROR" and "305" in r["message"] for r in lines)
    assert any(r["source"] == "daemon" and "starting it again" in r["message"] for r in lines)
    events = [r["event"] for r in AuditLog(audit_path(tmp_path / "state")).records()]
    assert events == ["daemon-started", "daemon-stopped"]


def test_the_site_worker_is_started_again_when_it_exits_and_stopped_with_the_daemon(tmp_path, monkeypatch):
    monkeypatch.setattr("meddiff.client.daemon.RESTART_FIRST_DELAY", 0.2)
    supernode = [sys.executable, "-c", "import time; print('INFO : SuperNode ID: 1', flush=True); time.sleep(60)"]
    starts = tmp_path / "worker-starts"
    worker = [sys.executable, "-c", f"import os; open({str(starts)!r}, 'a').write(str(os.getpid()) + ' '); "
              "print('site worker ready', flush=True)"]
    log_file = tmp_path / "site.jsonl"
    daemon = SiteDaemon(supernode, dict(os.environ), tmp_path / "state", "127.0.0.1:1", log_file, worker)
    assert _run_until_sigterm(daemon, after=3.0) == 0
    pids = starts.read_text().split()
    assert len(pids) >= 2  # it exited at once and was started again (every 0.2 s at most)
    state = json.loads(daemon_path(tmp_path / "state").read_text())
    assert state["worker_restarts"] >= 1 and state["state"] == "stopped"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(r["source"] == "worker" and "site worker ready" in r["message"] for r in lines)
    assert daemon.worker is not None and daemon.worker.poll() is not None  # nothing outlives the daemon
    assert daemon.process is not None and daemon.process.poll() is not None
