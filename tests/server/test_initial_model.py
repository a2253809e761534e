"""A federation can start from a model file (pretrained on public data): channels and classes are matched by
name, another network or resolution is refused with both values named, the file's SHA-256 is recorded in the run
and its checkpoints and sent to the sites, and a site that pins the starting models it accepts refuses others."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from meddiff.client.site_guard import initial_model_refusal
from meddiff.common import messages
from meddiff.common.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from meddiff.common.config import ConfigError, TrustConfig
from meddiff.common.diffusion.loading import model_meta, open_model_checkpoint
from meddiff.common.diffusion.model import ConditionalDenoiser
from meddiff.common.diffusion.transfer import CLASS_EMBEDDING, INPUT_CONV, OUTPUT_CONV, transfer_weights
from meddiff.common.run_spec import RunSpec
from meddiff.common.schema import ChannelSchema
from meddiff.common.specs import ModelSpec, RecipeSpec
from meddiff.server.federation import initial_weights
from meddiff.server.initial_model import load_initial_model
from meddiff.simulations.runner import simulate
from meddiff.simulations.scenario import load_scenario, run_spec
from tests.conftest import TINY_MODEL_TABLES

SMALL = ModelSpec(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8)
PUBLIC = ChannelSchema(("image",), ("normal", "pneumonia"))  # a public chest X-ray model
RUN = ChannelSchema(("image", "mask"), ("pneumonia",), 1)  # the federation adds a mask, keeps one class


def _state(schema: ChannelSchema, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return ConditionalDenoiser(schema, SMALL).state_dict()


def _model_file(path, schema: ChannelSchema, resolution: int = 16, spec: ModelSpec = SMALL):
    torch.manual_seed(5)
    state = ConditionalDenoiser(schema, spec).state_dict()
    save_checkpoint(path, {"model": state, "ema": state}, model_meta(schema, spec, RecipeSpec(), resolution))
    return path


def test_channels_and_classes_are_matched_by_name():
    source, fresh = _state(PUBLIC, 1), _state(RUN, 2)
    transfer = transfer_weights(source, PUBLIC, fresh, RUN)
    w = transfer.weights
    assert transfer.kept_channels == ("image",) and transfer.added_channels == ("mask",)
    assert transfer.kept_classes == ("pneumonia",)
    for block in range(3):  # [x_t | condition | availability] planes: image copied, mask left untrained
        assert torch.equal(w[INPUT_CONV][:, block * 2], source[INPUT_CONV][:, block])
        assert torch.equal(w[INPUT_CONV][:, block * 2 + 1], fresh[INPUT_CONV][:, block * 2 + 1])
    for name in OUTPUT_CONV:
        assert torch.equal(w[name][0], source[name][0]) and torch.equal(w[name][1], fresh[name][1])
    assert torch.equal(w[CLASS_EMBEDDING][0], source[CLASS_EMBEDDING][1])  # "pneumonia" was class 1 there
    assert torch.equal(w[CLASS_EMBEDDING][1], source[CLASS_EMBEDDING][2])  # the null class, last in both
    shared = [k for k in fresh if k not in {INPUT_CONV, *OUTPUT_CONV, CLASS_EMBEDDING}]
    assert shared and all(torch.equal(w[k], source[k]) for k in shared)
    back = transfer_weights(w, RUN, source, PUBLIC)  # the other way: the mask is dropped
    assert back.dropped_channels == ("mask",) and torch.equal(back.weights[INPUT_CONV][:, 0], source[INPUT_CONV][:, 0])
    ConditionalDenoiser(RUN, SMALL).load_state_dict(w, strict=True)  # the result is a valid run model


def test_another_network_or_resolution_is_refused_with_both_values(tmp_path):
    spec = RunSpec(RUN, 16, SMALL)
    fresh = initial_weights(spec)
    with pytest.raises(ConfigError, match="trained at 32 px, the run trains at 16 px"):
        load_initial_model(_model_file(tmp_path / "a.pt", PUBLIC, resolution=32), spec, fresh)
    wider = replace(SMALL, channels=(16, 32))
    with pytest.raises(ConfigError, match=r"channels \(16, 32\) there, \(8, 16\) in the run"):
        load_initial_model(_model_file(tmp_path / "b.pt", PUBLIC, spec=wider), spec, fresh)
    with pytest.raises(ConfigError, match="checkpoint not found"):
        load_initial_model(tmp_path / "missing.pt", spec, fresh)


def test_a_site_that_pins_starting_models_refuses_any_other():
    trust = TrustConfig(initial_models=("a" * 64,))
    assert initial_model_refusal({messages.INITIAL_MODEL: "a" * 64}, trust) == ""
    refusal = initial_model_refusal({messages.INITIAL_MODEL: "b" * 64}, trust)
    assert "sha256 bbbbbbbbbbbbbbbb..." in refusal and "[trust] initial_models" in refusal
    assert "starts from model scratch" in initial_model_refusal({messages.INITIAL_MODEL: ""}, trust)
    assert initial_model_refusal({messages.INITIAL_MODEL: ""}, TrustConfig(initial_models=("scratch",))) == ""
    assert initial_model_refusal({messages.INITIAL_MODEL: "b" * 64}, TrustConfig()) == ""  # nothing pinned


SCENARIO = """
name = "from-a-public-model"
[scenario]
data = "phantom"
sites = 2
resolution = 16
examples_per_site = 8
[federation]
rounds = 1
local_steps = 1
evaluate = false
""" + TINY_MODEL_TABLES


@pytest.mark.slow
def test_a_simulation_starts_from_the_model_and_records_its_hash(tmp_path):
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    spec = run_spec(scenario)
    start = _model_file(tmp_path / "public.pt", spec.schema, spec=scenario.model)
    digest = file_sha256(start)
    run_dir = tmp_path / "run"
    simulate(replace(scenario, federation=replace(scenario.federation, initial_model=str(start))), run_dir)
    recorded = json.loads((run_dir / "run.json").read_text())["initial_model"]
    assert recorded["sha256"] == digest and recorded["kept_channels"] == list(spec.schema.channels)
    state, meta = load_checkpoint(run_dir / "checkpoints" / "round-0001.pt")
    assert meta["initial_model"]["sha256"] == digest
    begin, fresh = open_model_checkpoint(start)[0]["model"], initial_weights(spec)
    moved = sum(float((state["model"][k] - begin[k]).norm()) for k in begin)
    apart = sum(float((fresh[k] - begin[k]).norm()) for k in begin)
    assert moved < 0.2 * apart  # one local step from the starting model, far from the fresh initialisation
