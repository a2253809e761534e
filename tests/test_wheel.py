"""meddiff as a hospital installs it: a wheel in a fresh virtual environment outside the source tree. Every command
a user starts with works from it (a tiny demo, a TLS federation of two sites on loopback); the one that needs the
source tree (bench) says so in one line.

To keep this test to minutes, the fresh environment takes meddiff from the wheel and its dependencies from the
project's .venv (a .pth line), and gets the same console scripts pip would write for Flower."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from meddiff.server.deployment import free_port
from tests.conftest import REPO, TINY_MODEL_TABLES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
FLOWER_SCRIPTS = ("flwr", "flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                  "flwr-clientapp", "flwr-simulation")


def run(*argv, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh virtual environment with meddiff installed from a freshly built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building writes build/ and *.egg-info into the tree it builds
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "bench_out",
                                                                "demo_out", "runs", "__pycache__"))
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", source, "-w",
                root / "dist", cwd=root)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((root / "dist").glob("meddiff-*.whl"))
    assert run(sys.executable, "-m", "venv", root / "venv", cwd=root).returncode == 0
    installed = run(root / "venv" / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index",
                    "--force-reinstall", "-q", wheel, cwd=root)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # then, and only then, the dependencies: pip must not see the project's editable meddiff as installed
    venv_site = Path(run(root / "venv" / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                         "['purelib'])", cwd=root).stdout.strip())
    (venv_site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    bin_dir = root / "venv" / "bin"
    for name in FLOWER_SCRIPTS:  # the entry points pip writes for Flower, pointed at the new interpreter
        source = Path(sys.executable).parent / name
        if source.exists():
            lines = source.read_text().splitlines()
            (bin_dir / name).write_text("\n".join([f"#!{bin_dir / 'python'}", *lines[1:]]) + "\n")
            (bin_dir / name).chmod(0o755)
    return bin_dir


def test_meddiff_comes_from_the_wheel_not_the_source_tree(installed, tmp_path):
    where = run(installed / "python", "-c", "import meddiff; print(meddiff.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where
    assert not Path(where.stdout.strip()).is_relative_to(REPO)


def test_help_phantom_a_tiny_demo_and_bench_from_the_wheel(installed, tmp_path):
    meddiff = installed / "meddiff"
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


def test_a_tls_federation_of_two_sites_runs_from_the_wheel(installed, tmp_path):
    meddiff, port = installed / "meddiff", free_port()
    env = {**os.environ, "PATH": f"{installed}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    assert run(meddiff, "certs", "--out", "certs", "--sites", "a,b", cwd=tmp_path).returncode == 0
    (tmp_path / "federation.toml").write_text(
        f'run_dir = "{tmp_path / "run"}"\n[schema]\nchannels = ["t1", "t2", "flair", "ct", "mask"]\n'
        'class_names = ["healthy", "lesion"]\nresolution = 16\n[federation]\nrounds = 1\nlocal_steps = 2\n'
        "min_sites = 2\nevaluate = false\ndeliver_final = false\n" + TINY_MODEL_TABLES)
    processes = []
    try:
        processes.append(subprocess.Popen(
            [meddiff, "coordinator", "start", "--config", "federation.toml", "--certs", "certs", "--port", str(port),
             "--wait-for-sites", "300"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
        for index, site in enumerate(("a", "b")):
            (tmp_path / site).mkdir()
            (tmp_path / site / "site.toml").write_text(f'site_id = "{site}"\n[data]\npath = "phantom"\n')
            processes.append(subprocess.Popen(
                [meddiff, "site", "start", "--config", f"{site}/site.toml", "--superlink", f"127.0.0.1:{port}",
                 "--ca", "certs/ca.crt", "--key", f"certs/sites/{site}", "--port", str(free_port()),
                 "--threads", "1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        output, _ = processes[0].communicate(timeout=600)
        assert processes[0].returncode == 0, output[-3000:]
        assert "1 rounds; latest global model" in output
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    shutil.rmtree(tmp_path / "certs", ignore_errors=True)  # private keys do not outlive the test
