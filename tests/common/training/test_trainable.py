"""Training a part of the network: frozen parameters never move (plain and DP-SGD), the schema-dependent layers
always train, and the ledger and round metrics say how many parameters were trained."""

from __future__ import annotations

import pytest
import torch

from meddiff.client.round import train_round
from meddiff.client.site_data import SiteData
from meddiff.common.config import ConfigError, PrivacyConfig
from meddiff.common.data.training_set import load_training_set
from meddiff.common.messages import TrainInstruction
from meddiff.common.run_spec import RunSpec
from meddiff.common.specs import ModelSpec, RecipeSpec
from meddiff.common.training.trainable import is_trained
from meddiff.common.training.trainer import Trainer
from meddiff.privacy.ledger import PrivacyLedger

SMALL = ModelSpec(channels=(16, 32), attention_levels=(False, True), num_head_channels=16, norm_num_groups=8)


@pytest.fixture(scope="module")
def phantom():
    return load_training_set("phantom", phantom_n=8, resolution=16).tensors


def test_the_parts_hold_what_they_name():
    assert is_trained("unet.up_blocks.0.resnets.0.conv1.conv.weight", "decoder")
    assert not is_trained("unet.down_blocks.0.resnets.0.conv1.conv.weight", "decoder")
    assert is_trained("unet.down_blocks.1.attentions.0.attn.to_q.weight", "norms-attention")
    assert is_trained("unet.down_blocks.0.resnets.0.norm1.weight", "norms-attention")
    assert not is_trained("unet.down_blocks.0.resnets.0.conv1.conv.weight", "norms-attention")
    for choice in ("decoder", "norms-attention"):  # the schema's layers: a new channel or class can be learnt
        assert is_trained("unet.conv_in.conv.weight", choice) and is_trained("unet.class_embedding.weight", choice)
    with pytest.raises(ConfigError, match="trainable must be one of"):
        RecipeSpec(trainable="encoder")


@pytest.mark.parametrize("choice", ["decoder", "norms-attention"])
def test_frozen_parameters_do_not_move_in_plain_training(phantom, choice):
    trainer = Trainer(phantom.schema, SMALL, RecipeSpec(batch_size=4, trainable=choice), device="cpu", ema=False)
    before = {k: v.clone() for k, v in trainer.weights().items()}
    trainer.train(phantom, 3)
    after = trainer.weights()
    names = dict(trainer.model.named_parameters())
    frozen = [k for k in names if not is_trained(k, choice)]
    moved = [k for k in names if is_trained(k, choice) and not torch.equal(before[k], after[k])]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert moved  # the trained part did learn
    assert 0 < trainer.trained.trained < trainer.trained.total


def test_dp_sgd_on_a_part_moves_only_that_part_and_the_ledger_says_so(phantom, tmp_path):
    recipe = RecipeSpec(batch_size=4, trainable="norms-attention")
    spec = RunSpec(phantom.schema, 16, SMALL, recipe, "phantom")
    privacy = PrivacyConfig(enabled=True, target_epsilon=8.0, noise_multiplicity=1)
    site = SiteData("north", phantom, privacy=privacy, ledger_path=tmp_path / "ledger.sqlite")
    start = Trainer(phantom.schema, SMALL, recipe, device="cpu", ema=False).weights()
    outcome = train_round(spec, start, site, TrainInstruction(server_round=1, rounds=1, local_steps=2))
    parameters = dict(Trainer(phantom.schema, SMALL, recipe, device="cpu").model.named_parameters())
    names = [k for k in start if k in parameters]
    assert all(torch.equal(start[k], outcome.weights[k]) for k in names if not is_trained(k, "norms-attention"))
    assert any(not torch.equal(start[k], outcome.weights[k]) for k in names if is_trained(k, "norms-attention"))
    trained = outcome.metrics["trained-parameters"]
    entry = PrivacyLedger(tmp_path / "ledger.sqlite").entries()[0]
    assert entry["trained"].startswith(f"norms-attention: {trained:,} of ")


def test_meddiff_train_trains_the_part_it_is_asked_for(tmp_path, capsys):
    from meddiff.cli import main
    from meddiff.common.diffusion.loading import open_model_checkpoint
    from tests.conftest import TINY_TRAIN_FLAGS

    assert main(["train", "--data", "phantom", "--out", str(tmp_path), "--steps", "2", *TINY_TRAIN_FLAGS,
                 "--trainable", "decoder"]) == 0
    assert "training decoder: " in " ".join(capsys.readouterr().out.split())
    assert open_model_checkpoint(tmp_path / "model.pt")[4].trainable == "decoder"


def test_a_fine_tuning_sites_reply_carries_only_the_trained_part_and_the_coordinator_restores_the_rest(phantom):
    """Issue 22: only what changed travels; put back into the global vector it is exactly the site's model."""
    import numpy as np

    from meddiff.client.local_runner import LocalRunner
    from meddiff.common.messages import SECURE_WEIGHT
    from meddiff.common.wire import TRAINED_KEY, WireFormatError, expand_trained, pack_reply, packed_vector, vector_of

    spec = RunSpec(phantom.schema, 16, SMALL, RecipeSpec(batch_size=4, trainable="norms-attention"), "phantom")
    runner = LocalRunner(lambda node_config, spec: SiteData("north", phantom))
    layout, mask = spec.weight_layout(), spec.trained_mask()
    start = vector_of(Trainer(phantom.schema, SMALL, spec.recipe, device="cpu", ema=False).weights(), layout)
    config = {**spec.to_config(), **TrainInstruction(server_round=1, rounds=1, local_steps=2).to_config()}
    part = runner.train(config, start, {}, "run").weights
    assert 0 < part.size == int(mask.sum()) < start.size
    record = pack_reply(part, start.size)
    assert list(record.keys()) == [TRAINED_KEY]
    whole = packed_vector(expand_trained(record, start, mask))
    assert np.array_equal(whole[~mask], start[~mask]) and np.array_equal(whole[mask], part)
    assert not np.array_equal(whole[mask], start[mask])  # the trained part did move
    with pytest.raises(WireFormatError, match="trains"):
        expand_trained(pack_reply(part[:-1], start.size), start, mask)
    secure = runner.train({**config, SECURE_WEIGHT: "uniform"}, start, {}, "run").weights
    assert secure.size == start.size  # SecAgg+ masks the whole vector: it is sent whole
    assert RunSpec(phantom.schema, 16, SMALL, RecipeSpec(), "phantom").trained_mask() is None
