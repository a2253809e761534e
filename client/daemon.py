"""The site daemon (`meddiff site start`): runs Flower's SuperNode in the foreground and looks after it.

- Logs: every line of the SuperNode and its ClientApps is printed and, with ``log_file``, appended as one JSON
  object (time, level, source, message), colour codes removed, for the hospital's log collector.
- State: ``.meddiff-site/daemon.json`` says pid, coordinator, state (running / stopping / stopped) and connection
  (connected / reconnecting), for `meddiff site status`. The SuperNode reconnects by itself when the coordinator
  restarts; when it gives up (the coordinator is not up yet, or does not know this site's key yet), the daemon
  starts it again with a backoff of 2 s doubling to 60 s, until it is stopped.
- The site worker (client/site_worker.py), with ``worker_command``: started before the SuperNode, so rounds run in
  a process that keeps torch, MONAI and the prepared data in memory; its lines are logged with source "worker";
  started again when it exits (until then the ClientApp runs rounds itself, slower but the same).
- SIGTERM / SIGINT: the SuperNode, the ClientApp it runs and the site worker are stopped (the round in progress
  is abandoned; the coordinator counts this site out of that round). Nothing is left half-written: models and status files are
  replaced atomically, audit lines are single fsync'ed writes, and the privacy ledger is an SQLite transaction
  (an abandoned DP round is cancelled, since nothing was released; if the ClientApp is killed before it can
  record that, the reservation stays counted as spent). The daemon then exits with 0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from ..common.jsonl import write_json_atomically
from .audit import AuditLog
from .site_paths import audit_path, daemon_path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LEVEL = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*:\s*(.*)$")
RECONNECTING = ("retry", "connection attempt failed", "unavailable")
CONNECTED = ("SuperNode ID", "Received successfully", "Sent successfully")
STOP_GRACE_SECONDS = 30.0
RESTART_FIRST_DELAY = 2.0  # seconds before starting an exited SuperNode again, doubling up to the maximum
RESTART_MAX_DELAY = 60.0


class SiteDaemon:
    def __init__(self, command: list[str], env: dict[str, str], state_dir: Path, superlink: str,
                 log_file: Path | None = None, worker_command: list[str] | None = None) -> None:
        self.command, self.env, self.state_dir, self.superlink = command, env, state_dir, superlink
        self.log_file, self.worker_command = log_file, worker_command
        self.worker: subprocess.Popen | None = None
        self.worker_started = 0.0
        self.state = {"pid": os.getpid(), "started": time.time(), "superlink": superlink, "state": "starting",
                      "connection": "connecting"}
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.audit = AuditLog(audit_path(state_dir))

    def _save_state(self, **changes) -> None:
        self.state.update(changes)
        write_json_atomically(daemon_path(self.state_dir), self.state)

    def _log(self, line: str, source: str = "supernode") -> None:
        text = ANSI.sub("", line.rstrip("\n"))
        if not text.strip():
            return
        match = LEVEL.match(text)
        level, message = (match.group(1), match.group(2)) if match else ("INFO", text)
        print(text, flush=True)
        lowered = message.lower()
        if source != "supernode":
            pass
        elif any(k in lowered for k in RECONNECTING) and self.state["connection"] != "reconnecting":
            self._save_state(connection="reconnecting")
        elif any(k in message for k in CONNECTED) and self.state["connection"] != "connected":
            self._save_state(connection="connected", connected_at=time.time())
        if self.log_file is not None:
            with open(self.log_file, "a") as f:
                f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "level": level,
                                    "source": source, "message": message}) + "\n")

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._log(f"received {signal.Signals(signum).name}: stopping the SuperNode and its ClientApp", "daemon")
        self._save_state(state="stopping")
        for process in (self.process, self.worker):
            if process is not None and process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._on_signal)
        self.audit.append("daemon-started", pid=os.getpid(), peer=self.superlink)
        self._start_worker()
        delay, code = RESTART_FIRST_DELAY, 0
        while not self.stopping.is_set():
            started = time.monotonic()
            code = self._run_supernode()
            if self.stopping.is_set():
                break
            # Flower's SuperNode gives up when it cannot activate (coordinator not up yet, or restarting): a
            # daemon does not. Back off, and start it again until stopped.
            delay = RESTART_FIRST_DELAY if time.monotonic() - started > RESTART_MAX_DELAY else delay
            self._log(f"the SuperNode exited with code {code}; starting it again in {delay:.0f} s", "daemon")
            self._save_state(connection="reconnecting", restarts=self.state.get("restarts", 0) + 1)
            if self.stopping.wait(delay):
                break
            delay = min(RESTART_MAX_DELAY, delay * 2)
        self._stop_worker()
        self.audit.append("daemon-stopped", pid=os.getpid(), peer=self.superlink, reason="signal")
        self._save_state(state="stopped", stopped=time.time(), connection="-")
        return 0

    def _run_supernode(self) -> int:
        self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1, start_new_session=True)  # its own group: we stop it
        self._save_state(state="running", supernode_pid=self.process.pid)
        reader = threading.Thread(target=self._pump, args=(self.process, "supernode"), daemon=True)
        reader.start()
        code = self._wait()
        reader.join(5)
        return code

    def _pump(self, process: subprocess.Popen, source: str) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._log(line, source)

    def _start_worker(self) -> None:
        if not self.worker_command or self.stopping.is_set():
            return
        self.worker = subprocess.Popen(self.worker_command, env=self.env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        self.worker_started = time.monotonic()
        threading.Thread(target=self._pump, args=(self.worker, "worker"), daemon=True).start()
        self._save_state(worker_pid=self.worker.pid)

    def _watch_worker(self) -> None:
        """A worker that exited is started again (at most every RESTART_FIRST_DELAY seconds)."""
        if self.worker is None or self.worker.poll() is None or self.stopping.is_set():
            return
        if time.monotonic() - self.worker_started < RESTART_FIRST_DELAY:
            return
        self._log(f"the site worker exited with code {self.worker.returncode}; starting it again", "daemon")
        self._save_state(worker_restarts=self.state.get("worker_restarts", 0) + 1)
        self._start_worker()

    def _stop_worker(self) -> None:
        if self.worker is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.worker.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.worker.wait(STOP_GRACE_SECONDS / 3)
                break
            except subprocess.TimeoutExpired:
                continue

    def _wait(self) -> int:
        assert self.process is not None
        while True:
            try:
                return self.process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self._watch_worker()
                if self.stopping.is_set():
                    break
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.2)
        try:  # the ClientApp and Flower's helpers live in the same group; none may outlive the daemon
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.process.wait()

