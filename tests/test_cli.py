"""The console command's promise: every sub-command, given bad input, ends in a one-line reason with exit code 2
(or 1 for the unexpected) and never a traceback; an unexpected failure leaves its traceback in a log file."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from meddiff.cli import build_parser, main
from meddiff.common.checkpoint import save_checkpoint

PARSER_SUBCOMMANDS = {"site", "phantom", "demo", "certs", "coordinator", "plan", "train", "train-autoencoder", "generate",
                      "detect-anomalies", "denoise", "super-resolve", "reconstruct", "segment", "translate", "simulate", "bench"}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Bad inputs of every kind a user gives: a missing path, an empty folder, a folder of random bytes, a file of
    random bytes, a PyTorch file that is not ours, a meddiff checkpoint of another kind, a model that works."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "random").mkdir()
    rng = np.random.default_rng(0)
    for name in ("IM0001", "scan.dcm", "image.png"):
        (root / "random" / name).write_bytes(rng.bytes(4096))
    (root / "random.bin").write_bytes(rng.bytes(2048))
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    save_checkpoint(root / "ledger.pt", {"x": torch.zeros(1)}, {"kind": "privacy-ledger"})
    (root / "site.toml").write_text('site_id = "a"\n[data]\npath = "phantom"\n[privacy]\nenabled = tru\n')
    return root


def cases(b, model) -> list[list[str]]:
    """(arguments) that must each fail cleanly; b: the bad-input folder, model: a real tiny model."""
    out = str(b / "out")
    task = lambda name, *extra: [name, "--model", str(model), "--out", out, *extra]  # noqa: E731
    return [
        ["site", "check", str(b / "nowhere")], ["site", "check", str(b / "empty")], ["site", "check", str(b / "random")],
        ["site", "check", str(b / "random.bin")], ["site", "check", "phantom", "--width", "wide"],
        ["site", "check", str(b / "random"), "--config", str(b / "random.bin")],
        ["site", "init", "--out", str(b / "random.bin")],
        ["site", "status", "--config", str(b / "nowhere.toml")], ["site", "status", "--config", str(b / "random.bin")],
        ["site", "models", "--config", str(b / "nowhere.toml")], ["site", "audit", "--config", str(b / "empty")],
        ["site", "budget", "--config", str(b / "site.toml")],
        ["site", "start", "--config", str(b / "nowhere.toml"), "--superlink", "127.0.0.1:1"],
        ["site", "start", "--config", str(b / "site.toml"), "--superlink", "example.org:9092", "--insecure"],
        ["phantom", "--n", "0", "--out", out], ["phantom", "--size", "big"],
        ["demo", "--rounds", "0", "--out", out], ["demo", "--local-steps", "x"],
        ["certs", "--out", str(b / "random.bin")], ["certs", "--out", out, "--hosts", ","],
        ["coordinator", "start", "--config", str(b / "random.bin")],
        ["coordinator", "start", "--config", str(b / "nowhere.toml")],
        ["plan", "--fingerprint", str(b / "random.bin"), "--out", out], ["plan", "--out", out],
        ["plan", "--data", str(b / "empty"), "--out", out],
        ["train", "--data", str(b / "nowhere"), "--out", out], ["train", "--data", str(b / "empty"), "--out", out],
        ["train", "--data", str(b / "random"), "--out", out], ["train", "--data", "phantom", "--out", out,
                                                               "--steps", "many"],
        ["train", "--data", "phantom", "--out", out, "--autoencoder", str(model)],
        ["train-autoencoder", "--data", str(b / "empty"), "--out", out],
        ["train-autoencoder", "--data", "phantom", "--out", out, "--widths", "8,x"],
        ["train-autoencoder", "--data", "phantom", "--out", out, "--widths", "16,32,64", "--resolution", "30"],
        ["generate", "--model", str(b / "nowhere.pt"), "--out", out],
        ["generate", "--model", str(b / "foreign.pt"), "--out", out],
        ["generate", "--model", str(b / "ledger.pt"), "--out", out],
        ["generate", "--model", str(b / "random.bin"), "--out", out],
        ["generate", "--model", str(model), "--out", out, "--given", f"t1={b / 'random.bin'}"],
        task("detect-anomalies", "--data", str(b / "empty")), task("denoise", "--data", str(b / "random")),
        task("super-resolve", "--data", str(b / "nowhere")), task("reconstruct", "--data", str(b / "random.bin")),
        task("segment", "--data", str(b / "empty")), task("translate", "--data", "phantom", "--from", "t1",
                                                          "--to", "nothing"),
        ["denoise", "--model", str(b / "foreign.pt"), "--data", "phantom", "--out", out],
        ["reconstruct", "--model", str(model), "--kspace", str(b / "random.bin"), "--channel", "t2", "--out", out],
        ["simulate", str(b / "random.bin")], ["simulate", str(b / "nowhere.toml")], ["simulate", "--rounds", "0"],
        ["bench", "--data", str(b / "empty")], ["bench", "--report-only", "--out", str(b / "empty")],
    ]


def test_every_subcommand_is_in_the_sweep(bad, tiny_model):
    covered = {argv[0] for argv in cases(bad, tiny_model)}
    assert covered == PARSER_SUBCOMMANDS
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(commands.choices) == PARSER_SUBCOMMANDS  # a new sub-command must join the sweep


def test_bad_input_to_every_subcommand_gives_one_line_and_no_traceback(bad, tiny_model, capfd, monkeypatch):
    monkeypatch.setenv("MEDDIFF_LOG_DIR", str(bad / "logs"))
    failures = []
    for argv in cases(bad, tiny_model):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse: usage line and one "error:" line
            code = exit_.code
        captured = capfd.readouterr()  # file descriptors: `bench` runs its suite in a process of its own
        text = captured.out + captured.err
        reasons = [line for line in captured.err.splitlines() if re.search(r"error:|failed:", line)]
        if code not in (1, 2) or "Traceback" in text or len(reasons) != 1:
            failures.append((argv, code, text[-600:]))
    assert not failures, failures
    assert not (bad / "logs").exists()  # every case above is a foreseen mistake: none needed a crash log


def test_an_unexpected_failure_is_one_line_with_its_traceback_in_a_log_file(tmp_path, capsys, monkeypatch):
    from meddiff.commands import phantom

    def broken(args):
        raise RuntimeError("the phantom generator broke\nsecond line")

    monkeypatch.setattr(phantom, "run", broken)
    monkeypatch.setenv("MEDDIFF_LOG_DIR", str(tmp_path / "logs"))
    assert main(["phantom", "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("meddiff phantom: failed: RuntimeError: the phantom generator broke (inputs: --out ")
    logs = list((tmp_path / "logs").glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    assert "Traceback" in logs[0].read_text() and "second line" in logs[0].read_text()
    assert main(["-v", "phantom", "--out", str(tmp_path / "p")]) == 1
    assert "Traceback" in capsys.readouterr().err  # -v prints it too


def test_console_text_keeps_square_brackets(tmp_path, capsys):
    folder = tmp_path / "scans [2024]"
    assert main(["phantom", "--out", str(folder), "--n", "2", "--size", "16"]) == 0
    assert f"wrote {folder / 'phantom.npz'}" in capsys.readouterr().out
    assert main(["site", "init", "--out", str(tmp_path / "site.toml")]) == 0
    assert "set its [data] path" in capsys.readouterr().out


def test_the_parser_loads_without_torch_or_monai():
    """`meddiff --help` and every command's parsing answer in a fraction of a second: torch and MONAI load only
    where a command uses them (they cost about 7 s on 2 cores), and MONAI never loads MLflow for its handlers."""
    import subprocess
    import sys

    probe = ("import sys; from meddiff.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('torch', 'monai', 'mlflow') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr[-2000:]
    monai = subprocess.run([sys.executable, "-c", "import sys, meddiff, monai; print('mlflow' in sys.modules)"],
                           capture_output=True, text=True, timeout=120)
    assert monai.stdout.strip() == "False", monai.stderr[-2000:]
