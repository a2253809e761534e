"""meddiff as a hospital installs it: a wheel in a fresh virtual environment outside the source tree. Every command
a user starts with works from it (a tiny demo here; the TLS federation of the site admin guide's walk-through in
tests/test_site_admin_guide.py runs from the same wheel); the one that needs the source tree (bench) says so in one
line.

To keep this test to minutes, the fresh environment takes meddiff from the wheel and its dependencies from the
project's .venv (a .pth line), and gets the same console scripts pip would write for Flower."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def test_meddiff_comes_from_the_wheel_not_the_source_tree(installed_wheel, tmp_path):
    where = run(installed_wheel / "python", "-c", "import meddiff; print(meddiff.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed_wheel.parent), where
    assert not Path(where.stdout.strip()).is_relative_to(REPO)


def test_help_phantom_a_tiny_demo_and_bench_from_the_wheel(installed_wheel, tmp_path):
    meddiff = installed_wheel / "meddiff"
    assert run(meddiff, "--help", cwd=tmp_path).returncode == 0
    assert run(meddiff, "coordinator", "start", "--help", cwd=tmp_path).returncode == 0
    phantom = run(meddiff, "phantom", "--out", "ph", "--n", "4", "--size", "16", cwd=tmp_path)
    assert phantom.returncode == 0 and (tmp_path / "ph" / "phantom.npz").exists(), phantom.stderr
    demo = run(meddiff, "demo", "--out", "demo", "--rounds", "1", "--local-steps", "2", "--samples", "4",
               "--sample-steps", "3", cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "round 1 of 1" in demo.stdout and "phantom check" in demo.stdout
    bench = run(meddiff, "bench", "--quick", cwd=tmp_path)
    assert bench.returncode == 2 and "ship with the source checkout" in bench.stderr
    assert len(bench.stderr.strip().splitlines()) == 1 and "Traceback" not in bench.stderr
