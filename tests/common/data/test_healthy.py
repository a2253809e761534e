"""Healthy-only training: which examples count as healthy, in `meddiff train`, in a federated round, in the plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddiff.client.round import evaluate_round, train_round
from meddiff.client.site_data import SiteData
from meddiff.common.config import ConfigError
from meddiff.common.data.healthy import healthy_only, healthy_rows
from meddiff.common.data.tensors import TrainingTensors
from meddiff.common.data.training_set import load_training_set
from meddiff.common.messages import TrainInstruction
from meddiff.common.run_spec import RunSpec
from meddiff.common.schema import ChannelSchema
from meddiff.common.specs import ModelSpec, RecipeSpec, recipe_from_table
from meddiff.common.training.trainer import Trainer

SMALL = ModelSpec(channels=(8, 16), attention_levels=(False, True), num_head_channels=16, norm_num_groups=8)


def _classed(labels: list[int]) -> TrainingTensors:
    n = len(labels)
    return TrainingTensors(ChannelSchema(("xray",), ("normal", "benign", "malignant")), torch.zeros(n, 1, 4, 4),
                           torch.ones(n, 1, dtype=torch.bool), torch.tensor(labels))


def test_masks_decide_first_and_an_example_without_its_mask_is_left_out():
    images = -torch.ones(4, 2, 4, 4)
    images[1, 1, 2, 2] = 1.0  # a lesion pixel
    available = torch.ones(4, 2, dtype=torch.bool)
    available[2, 1] = False  # its mask is missing: nobody knows whether it is healthy
    data = TrainingTensors(ChannelSchema(("t1", "mask"), ("healthy", "lesion")), images, available,
                           torch.tensor([1, 1, 0, 0]))
    assert healthy_rows(data, ()).tolist() == [True, False, False, True]  # the masks win over the class labels


def test_classes_decide_without_masks_and_several_can_be_healthy():
    data = _classed([0, 1, 2, -1, 1])
    assert healthy_rows(data, ("normal", "benign")).tolist() == [True, True, False, False, True]
    assert len(healthy_only(data, ("normal",))) == 1


@pytest.mark.parametrize("data, classes, message", [
    (_classed([0, 1]), ("healthy",), "['normal', 'benign', 'malignant']"),
    (_classed([0, 1]), (), "--healthy-class NAME"),
    (_classed([2, 2]), ("normal",), "none of its 2 examples is healthy"),
    (TrainingTensors(ChannelSchema(("ct",)), torch.zeros(2, 1, 4, 4), torch.ones(2, 1, dtype=torch.bool),
                     torch.full((2,), -1)), (), "neither"),
])
def test_data_that_cannot_say_what_is_healthy_is_refused_with_the_fix(data, classes, message):
    with pytest.raises(ValueError, match="site-a") as error:
        healthy_only(data, classes, "site-a")
    assert message in str(error.value)


def test_the_plan_sets_it_for_every_site_and_refuses_classes_without_it():
    recipe = recipe_from_table({"healthy_only": True, "healthy_classes": ["normal"]}, "federation.toml")
    assert recipe.healthy_only and recipe.healthy_classes == ("normal",)
    with pytest.raises(ConfigError, match="healthy_only is false"):
        recipe_from_table({"healthy_classes": ["normal"]}, "federation.toml")


def test_a_federated_round_trains_and_evaluates_on_the_healthy_examples_only():
    phantom = load_training_set("phantom", phantom_n=12, resolution=16).tensors
    healthy = int(healthy_rows(phantom, ()).sum())
    assert 0 < healthy < len(phantom)
    recipe = RecipeSpec(batch_size=4, healthy_only=True)
    spec = RunSpec(phantom.schema, 16, SMALL, recipe, "phantom")
    site = SiteData("north", phantom, holdout=phantom)
    start = Trainer(phantom.schema, SMALL, recipe, device="cpu", ema=False).weights()
    outcome = train_round(spec, start, site, TrainInstruction(server_round=1, rounds=1, local_steps=1))
    assert outcome.metrics["num-examples"] == healthy
    assert evaluate_round(spec, outcome.weights, site)["num-examples"] == healthy


def test_meddiff_train_healthy_only_keeps_the_healthy_examples_and_records_it(tmp_path, capsys):
    from meddiff.cli import main
    from meddiff.common.diffusion.loading import open_model_checkpoint
    from tests.conftest import TINY_TRAIN_FLAGS

    assert main(["train", "--data", "phantom", "--out", str(tmp_path), "--steps", "1", *TINY_TRAIN_FLAGS,
                 "--healthy-only"]) == 0
    phantom = load_training_set("phantom", phantom_n=8, resolution=16).tensors
    kept = int(healthy_rows(phantom, ()).sum())
    assert f"healthy only: {kept} of 8 examples" in capsys.readouterr().out
    _, meta, _, _, recipe = open_model_checkpoint(tmp_path / "model.pt")
    assert recipe.healthy_only and meta["data"]["examples"] == kept
    npz = tmp_path / "xray.npz"
    np.savez(npz, xray=np.random.default_rng(0).uniform(size=(10, 16, 16)).astype(np.float32),
             label=np.array([0, 1] * 5), class_names=np.array(["normal", "pneumonia"]))
    assert main(["train", "--data", str(npz), "--out", str(tmp_path / "b"), "--steps", "1", *TINY_TRAIN_FLAGS,
                 "--healthy-class", "pneumonia-free"]) == 2
    assert "['normal', 'pneumonia']" in capsys.readouterr().err
    assert main(["train", "--data", str(npz), "--out", str(tmp_path / "b"), "--steps", "1", *TINY_TRAIN_FLAGS,
                 "--healthy-class", "normal"]) == 0
    assert "healthy only: 5 of 10 examples" in capsys.readouterr().out
