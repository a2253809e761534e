"""The audit log's hash chain: intact after appends from several processes' worth of writers; any edit, deletion
or reordering is found and the first broken line is named, also by `meddiff site audit`."""

from __future__ import annotations

import json

import pytest

from meddiff.cli import main
from meddiff.client.audit import AuditLog
from meddiff.client.site_paths import audit_path, site_state_dir


def _log(tmp_path, n: int = 5) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(n):
        log.append("sent", round=i + 1, metrics={"train-loss": 0.5 / (i + 1)})
    return log


def test_an_untouched_log_verifies(tmp_path):
    log = _log(tmp_path)
    result = log.verify()
    assert result.ok and result.lines == 5 and [r["seq"] for r in log.records()] == [1, 2, 3, 4, 5]


def _edit(log: AuditLog, line: int, change) -> None:
    lines = log.path.read_text().splitlines()
    record = json.loads(lines[line - 1])
    change(record)
    lines[line - 1] = json.dumps(record, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("tamper, broken", [
    (lambda log: _edit(log, 3, lambda r: r["metrics"].update({"train-loss": 0.01})), 3),  # a value changed
    (lambda log: _edit(log, 2, lambda r: r.update({"extra": "x"})), 2),  # a field added
    (lambda log: log.path.write_text("\n".join(
        line for i, line in enumerate(log.path.read_text().splitlines()) if i != 1) + "\n"), 2),  # line 2 removed
    (lambda log: log.path.write_text("\n".join(
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]])(log.path.read_text().splitlines())) + "\n"), 2),  # reordered
], ids=["value edited", "field added", "line deleted", "lines swapped"])
def test_tampering_is_found_at_the_first_altered_line(tmp_path, tamper, broken):
    log = _log(tmp_path)
    tamper(log)
    result = log.verify()
    assert not result.ok and result.first_broken == broken


def test_site_audit_names_the_altered_line(tmp_path, capsys):
    config = tmp_path / "site.toml"
    config.write_text('site_id = "a"\n[data]\npath = "phantom"\n')
    log = AuditLog(audit_path(site_state_dir(config)))
    for i in range(4):
        log.append("sent", round=i + 1, metrics={"train-loss": 0.1})
    assert main(["site", "audit", "--config", str(config)]) == 0
    assert "audit chain intact: 4 events" in capsys.readouterr().out
    _edit(log, 3, lambda r: r.update({"round": 30}))
    assert main(["site", "audit", "--config", str(config)]) == 1
    assert "BROKEN at line 3" in capsys.readouterr().out
