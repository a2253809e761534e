"""Early stopping: a plateau of the held-out loss stops training and the checkpoint holds the best model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from meddiff.cli import main
from meddiff.common.checkpoint import load_checkpoint
from meddiff.common.data.training_set import load_training_set
from meddiff.common.specs import ModelSpec, RecipeSpec, RuntimeSpec
from meddiff.common.training.early_stopping import Plateau, ema_held_out_loss, train_until_plateau
from meddiff.common.training.trainer import Trainer

from tests.conftest import TINY_TRAIN_FLAGS as TINY_FLAGS

TINY = ModelSpec(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8)


def test_the_plateau_counts_evaluations_since_the_best_one():
    plateau = Plateau(patience=2, min_delta=0.1)
    assert plateau.observe(10, 1.0) and not plateau.stopped
    assert not plateau.observe(20, 0.95)  # less than 10 % better: not an improvement
    assert plateau.since_best == 1 and not plateau.stopped
    assert plateau.observe(30, 0.5) and plateau.since_best == 0
    assert not plateau.observe(40, math.nan) and not plateau.observe(50, 0.6)
    assert plateau.stopped and plateau.record()["best_at"] == 30 and plateau.record()["stopped"]
    assert Plateau(patience=1).observe(1, math.inf) is False  # a non-finite loss is never the best


def test_training_stops_on_a_plateau_and_the_checkpoint_is_the_best_model(tmp_path):
    data = load_training_set("phantom", resolution=16, phantom_n=24).tensors
    train, holdout = data.subset(torch.arange(16)), data.subset(torch.arange(16, 24))
    # a learning rate so small that the model does not move: no evaluation beats the first by 1 %
    trainer = Trainer(data.schema, TINY, RecipeSpec(batch_size=4, learning_rate=1e-9), RuntimeSpec(
        checkpoint_every=1000), "cpu", steps=100)
    plateau = Plateau(patience=2, min_delta=0.01)
    result = train_until_plateau(trainer, train, holdout, plateau, every=5, checkpoint=tmp_path / "model.pt",
                                 meta={})
    assert plateau.stopped and [at for at, _ in plateau.history] == [5, 10, 15]
    assert result.steps == trainer.step == 15  # stopped long before the cap of 100
    state, meta = load_checkpoint(tmp_path / "model.pt")
    assert int(state["step"]) == 5 and meta["early_stopping"]["best_at"] == 5  # the best, not the last
    first = plateau.history[0][1]
    assert ema_held_out_loss(trainer, holdout) == pytest.approx(first, rel=1e-3)  # a paired, repeatable measure


def test_meddiff_train_early_stopping_writes_its_history(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", "phantom", "--out", str(out), "--steps", "6", "--early-stopping", "3",
                 "--eval-every", "2", *TINY_FLAGS, "--phantom-n", "24"]) == 0
    summary = json.loads((out / "train.json").read_text())
    stopping = summary["early_stopping"]
    assert [at for at, _ in stopping["history"]] == [2, 4, 6] and summary["data"]["holdout"]["examples"] > 0
    _, meta = load_checkpoint(out / "model.pt")
    assert meta["step"] == stopping["best_at"]


def test_meddiff_train_refuses_a_bad_patience(tmp_path, capsys):
    assert main(["train", "--data", "phantom", "--out", str(tmp_path / "r"), "--early-stopping", "-1",
                 *TINY_FLAGS]) == 2
    assert "--early-stopping must be >= 0" in capsys.readouterr().err


def test_resuming_a_finished_early_stopped_run_says_there_is_nothing_to_train(tmp_path, capsys):
    out = tmp_path / "run"
    flags = [*TINY_FLAGS, "--phantom-n", "24", "--early-stopping", "2", "--eval-every", "2"]
    assert main(["train", "--data", "phantom", "--out", str(out), "--steps", "2", *flags]) == 0
    assert main(["train", "--data", "phantom", "--out", str(out), "--resume", "--steps", "2",
                 "--early-stopping", "2", "--eval-every", "2"]) == 2
    assert "nothing to train (raise --steps)" in capsys.readouterr().err
