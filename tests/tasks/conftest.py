"""The barely trained phantom model every task-command test runs on (trained once per session: plumbing,
guarantees that hold for any model, and errors; quality tests use ``trained_phantom``)."""

from __future__ import annotations

import pytest

from meddiff.cli import main

TINY = ["--channels", "8,16", "--resolution", "16", "--phantom-n", "8", "--batch-size", "4"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert main(["train", "--data", "phantom", "--out", str(out), "--steps", "2", *TINY]) == 0
    return out / "model.pt"
