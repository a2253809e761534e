"""``meddiff demo``, the README's main job, through the real parser at a tiny size: the default simulation, its
round lines on the console (Flower's and Ray's notices in the run's log), then the samples' phantom check."""

from __future__ import annotations

import json

from meddiff.cli import main


def test_the_demo_runs_end_to_end_through_the_real_parser(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--rounds", "1", "--local-steps", "2", "--samples", "4",
                 "--sample-steps", "3"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "phantom"
    assert "round 1 of 1 (" in out and "train loss site-0 " in out and "site-2 " in out
    assert "phantom check: samples vs held-out phantom data" in out and "statistics within tolerance" in out
    assert f"report {run / 'report.html'}" in out
    assert "DEPRECATED" not in out and "FutureWarning" not in out  # those went to the run's log
    assert "DEPRECATED FEATURE" in (run / "logs" / "simulation.log").read_text()
    check = json.loads((run / "samples" / "generate.json").read_text())["phantom_check"]
    assert len(check["rows"]) == 14  # every statistic of the check was computed (a tiny model need not pass it)
    assert (run / "samples" / "grid.png").stat().st_size > 1000 and (run / "report.html").exists()
