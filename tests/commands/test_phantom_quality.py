"""Acceptance: the default ``meddiff train`` + ``meddiff generate`` learns the phantom (about 5 min on 2 cores).

The per-tissue check (CT bands: air, soft tissue, bone; mean t1/t2/flair in each; area fractions) must hold
for the trained model and must fail for a model trained one step, so the check can tell the two apart.
"""

from __future__ import annotations

import json

import pytest

from meddiff.cli import main


def _check(model, out) -> dict:
    assert main(["generate", "--model", str(model), "--n", "64", "--out", str(out)]) == 0
    return json.loads((out / "generate.json").read_text())["phantom_check"]


@pytest.mark.slow
def test_default_training_generates_phantoms_and_one_step_does_not(tmp_path, trained_phantom):
    assert main(["train", "--data", "phantom", "--out", str(tmp_path / "one-step"), "--steps", "1"]) == 0
    untrained = _check(tmp_path / "one-step" / "model.pt", tmp_path / "one-step" / "samples")
    assert not untrained["all_within"]
    trained = _check(trained_phantom, tmp_path / "default")
    failing = [row for row in trained["rows"] if not row["within"]]
    assert trained["all_within"], failing
