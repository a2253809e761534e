"""Shared test fixtures: where the real data is, and skipping with a reason when it is absent."""

from __future__ import annotations

import os
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
SHARED_DATA = Path(os.environ.get("MEDDIFF_DATA", REPO.parent / "shared" / "data"))


def shared(relative: str) -> Path:
    """A path inside the shared real data, or skip the test saying what is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data {path} is absent (set MEDDIFF_DATA to the folder of the shared data sets)")
    return path


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
