"""Shared test fixtures and the suite's own guarantees: where the real data is (a test that reads it carries the
``realdata`` marker; absent data skips it, or fails the run when CI=true), no process a test starts outlives the
test, and no test leaves a signal handler changed in the pytest process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The smallest model and batch the federation tests train (a [train] and a [model] table of a TOML config).
TINY_MODEL_TABLES = """[train]
batch_size = 4
[model]
channels = [8, 16]
attention_levels = [false, true]
num_head_channels = 8
norm_num_groups = 8
"""
# MLflow's start-up (imports, its database) costs seconds per federated run: only the tests of tracking pay it
os.environ["MEDDIFF_TRACKING"] = "off"
SHARED_DATA = Path(os.environ.get("MEDDIFF_DATA", REPO.parent / "shared" / "data"))


_running: dict[str, pytest.Item] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    _running["item"] = item  # before its fixtures: `shared` called from a fixture knows the test too


def pytest_runtest_teardown(item: pytest.Item) -> None:
    _running.pop("item", None)


def shared(relative: str) -> Path:
    """A path inside the shared real data, or skip the test saying what is missing (fail when CI=true, where the
    data must be there). Only a test marked ``realdata`` may read it."""
    item = _running.get("item")
    if item is not None and item.get_closest_marker("realdata") is None:
        pytest.fail(f"{item.nodeid} reads the shared real data ({relative}): mark it @pytest.mark.realdata")
    path = SHARED_DATA / relative
    if not path.exists():
        reason = f"real data {path} is absent (set MEDDIFF_DATA to the folder of the shared data sets)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return path


# Every process a test starts inherits this marker, also those that leave our process tree (new sessions,
# orphans): after each test, any marked process that was not there before is ended by its PID.
SESSION_MARK = f"MEDDIFF_TEST_SESSION=pytest-{os.getpid()}"
os.environ["MEDDIFF_TEST_SESSION"] = SESSION_MARK.split("=", 1)[1]


def marked_processes() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if SESSION_MARK.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def end_processes(pids: set[int], grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.2)
        pids = {pid for pid in pids if Path(f"/proc/{pid}").exists()}
        if not pids:
            return


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    before = marked_processes()
    yield
    left = marked_processes() - before
    if left:
        names = sorted(_command_line(pid) for pid in left)
        end_processes(left)
        warnings.warn(f"{len(left)} process(es) outlived their test and were ended by PID: {names}", stacklevel=1)


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return str(pid)


HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@pytest.fixture(autouse=True)
def _signal_handlers_restored(request):
    saved = {s: signal.getsignal(s) for s in HANDLED_SIGNALS}
    yield
    changed = [signal.Signals(s).name for s in HANDLED_SIGNALS if signal.getsignal(s) != saved[s]]
    for s, handler in saved.items():
        signal.signal(s, handler)
    if changed:
        pytest.fail(f"{request.node.nodeid} left the pytest process's handler of {changed} changed")


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests run on 2-core machines: keep torch from oversubscribing."""
    import torch
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def trained_phantom(tmp_path_factory) -> Path:
    """The default ``meddiff train`` on the phantom (1500 steps, about 5 min on 2 cores): trained once per session
    for every test that needs a model that has really learnt the phantom (generation quality, the tasks)."""
    from meddiff.cli import main

    out = tmp_path_factory.mktemp("trained-phantom")
    assert main(["train", "--data", "phantom", "--out", str(out), "--steps", "1500"]) == 0
    return out / "model.pt"


TINY_TRAIN_FLAGS = ["--channels", "8,16", "--resolution", "16", "--phantom-n", "8", "--batch-size", "4"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A barely trained phantom model (2 steps, tiny network): for plumbing, guarantees that hold for any model,
    and errors; quality tests use ``trained_phantom``."""
    from meddiff.cli import main

    out = tmp_path_factory.mktemp("tiny")
    assert main(["train", "--data", "phantom", "--out", str(out), "--steps", "2", *TINY_TRAIN_FLAGS]) == 0
    return out / "model.pt"


FLOWER_SCRIPTS = ("flwr", "flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                  "flwr-clientapp", "flwr-simulation")


def run(*argv, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory) -> Path:
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
