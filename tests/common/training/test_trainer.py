"""The local trainer: resumes bit-for-bit, keeps an EMA, refuses foreign weights, stops on a diverging loss."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from meddiff.common.data.training_set import load_training_set
from meddiff.common.specs import ModelSpec, RecipeSpec, RuntimeSpec
from meddiff.common.training.trainer import Trainer, TrainingDiverged

TINY = ModelSpec(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8)
FAST = RecipeSpec(batch_size=4, warmup_steps=2)
RARE_CHECKPOINTS = RuntimeSpec(checkpoint_every=1000)


def make_trainer(schema, model, recipe, device, steps=6) -> Trainer:
    return Trainer(schema, model, recipe, RARE_CHECKPOINTS, device, steps=steps)


@pytest.fixture(scope="module")
def data():
    return load_training_set("phantom", resolution=16, phantom_n=12).tensors


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_seed_gives_the_same_model_and_training(data):
    one, two = make_trainer(data.schema, TINY, FAST, "cpu"), make_trainer(data.schema, TINY, FAST, "cpu")
    assert _same(one.weights(), two.weights())
    one.train(data), two.train(data)
    assert _same(one.weights(), two.weights())
    other = make_trainer(data.schema, TINY, replace(FAST, seed=1), "cpu")
    assert not _same(one.weights(), other.weights())


def test_resume_continues_exactly_where_the_checkpoint_stopped(data, tmp_path):
    straight = make_trainer(data.schema, TINY, FAST, "cpu")
    result = straight.train(data)
    assert result.steps == 6 and straight.step == 6

    first = make_trainer(data.schema, TINY, FAST, "cpu")
    first.train(data, 3, checkpoint_path=tmp_path / "model.pt")
    resumed = Trainer.resume(tmp_path / "model.pt", "cpu", runtime=RARE_CHECKPOINTS)
    assert resumed.step == 3 and resumed.resolution == 16
    resumed.train(data)  # up to the planned 6 steps
    assert resumed.step == 6
    assert _same(straight.weights(), resumed.weights())
    assert _same(straight.ema_weights(), resumed.ema_weights())


def test_ema_lags_the_weights_and_follows_them_with_decay_zero(data):
    trainer = make_trainer(data.schema, TINY, FAST, "cpu")
    trainer.train(data)
    assert not _same(trainer.weights(), trainer.ema_weights())
    copy = make_trainer(data.schema, TINY, replace(FAST, ema_decay=0.0), "cpu")
    copy.train(data)
    assert _same(copy.weights(), copy.ema_weights())


def test_weights_of_another_model_are_refused_by_name(data):
    trainer = make_trainer(data.schema, TINY, FAST, "cpu")
    other = make_trainer(data.schema, replace(TINY, channels=(8, 24)), FAST, "cpu")
    with pytest.raises(RuntimeError, match="size mismatch"):
        trainer.load_weights(other.weights())


def test_a_loss_that_stays_non_finite_stops_training_with_advice(data):
    poisoned = replace(data, images=torch.full_like(data.images, float("nan")))
    trainer = make_trainer(data.schema, TINY, FAST, "cpu", steps=50)
    before = {k: v.clone() for k, v in trainer.weights().items()}
    with pytest.raises(TrainingDiverged, match="learning_rate"):
        trainer.train(poisoned)
    after = trainer.weights()  # no update was applied from a non-finite loss (skipped on the device)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_few_non_finite_losses_are_skipped_and_counted(data):
    trainer = make_trainer(data.schema, TINY, replace(FAST, batch_size=len(data)), "cpu", steps=8)
    trainer.train(data, steps=2)
    before = {k: v.clone() for k, v in trainer.weights().items()}
    poisoned = replace(data, images=torch.full_like(data.images, float("nan")))
    result = trainer.train(poisoned, steps=3)
    assert result.skipped_nonfinite == 3 and result.steps == 0
    assert all(torch.equal(before[k], v) for k, v in trainer.weights().items())
    assert trainer.train(data, steps=2).skipped_nonfinite == 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.weights().items())
