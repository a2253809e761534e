"""Latent diffusion, stage 2 federated (issue 23): the run names a stage-1 autoencoder; every message carries its
file, a site accepts it only by its SHA-256 (and its [trust] pin), encodes its own images and trains the one
denoiser on the latents; checkpoints and delivered models are whole latent models that the tasks read."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import torch
from flwr.app import ConfigRecord, Message, Metadata, RecordDict

from meddiff.cli import main
from meddiff.client.delivery import store_delivered_model
from meddiff.client.model_store import ModelStore
from meddiff.client.site_guard import autoencoder_refusal
from meddiff.common import messages
from meddiff.common.checkpoint import CheckpointError, file_sha256, load_checkpoint
from meddiff.common.config import ConfigError, TrustConfig
from meddiff.common.data.phantom import SCHEMA as PHANTOM_SCHEMA
from meddiff.common.diffusion.loading import load_model
from meddiff.common.latent.autoencoder import AutoencoderFile, build_autoencoder, load_autoencoder
from meddiff.common.run_spec import RunSpec, latent_run
from meddiff.common.specs import ModelSpec
from meddiff.common.wire import pack
from meddiff.server.federation import initial_weights
from meddiff.server.initial_model import load_initial_model
from tests.common.latent.test_latent import TINY_AE
from tests.conftest import TINY_MODEL_TABLES

TINY_NET = ModelSpec(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ae") / "autoencoder.pt"
    AutoencoderFile(TINY_AE, PHANTOM_SCHEMA, 16, 0.7, build_autoencoder(TINY_AE).state_dict()).save(path)
    return path


def _latent_spec(autoencoder, resolution=16) -> RunSpec:
    return latent_run(RunSpec(PHANTOM_SCHEMA, resolution, TINY_NET), str(autoencoder), "federation.toml")


def test_a_latent_run_spec_travels_with_its_autoencoder_and_is_refused_if_altered(autoencoder):
    spec = _latent_spec(autoencoder)
    assert spec.resolution == 8 and spec.data_resolution == 16 and spec.schema.channels[:2] == ("z0.t1", "z1.t1")
    assert spec.data_schema == PHANTOM_SCHEMA
    config = spec.message_config()
    assert json.loads(spec.to_config()[messages.LATENT])["sha256"] == file_sha256(autoencoder)
    assert messages.AUTOENCODER not in spec.to_config()  # run.json and the tracker get the record, not the bytes
    received = RunSpec.from_config(config)
    assert received.latent.sha256 == file_sha256(autoencoder) and received.weight_layout() == spec.weight_layout()
    assert all(torch.equal(received.latent.weights[k], v) for k, v in spec.latent.weights.items())
    altered = bytearray(config[messages.AUTOENCODER])
    altered[-100] ^= 0xFF
    with pytest.raises(CheckpointError, match="altered on the way"):
        RunSpec.from_config({**config, messages.AUTOENCODER: bytes(altered)})
    with pytest.raises(ValueError, match="without its autoencoder"):
        RunSpec.from_config({k: v for k, v in config.items() if k != messages.AUTOENCODER})


def test_a_run_the_autoencoder_does_not_fit_is_refused_with_both_values(autoencoder, tmp_path):
    with pytest.raises(ConfigError, match="trained at 16 px.*resolution is 32"):
        _latent_spec(autoencoder, resolution=32)
    other = RunSpec(replace(PHANTOM_SCHEMA, channels=("t1", "t2")), 16, TINY_NET)
    with pytest.raises(ConfigError, match="channels"):
        latent_run(other, str(autoencoder), "federation.toml")
    with pytest.raises(ConfigError, match="not found"):
        latent_run(RunSpec(PHANTOM_SCHEMA, 16, TINY_NET), str(tmp_path / "none.pt"), "federation.toml")
    # a pixel model cannot start a latent run (nor the other way round)
    pixel = RunSpec(PHANTOM_SCHEMA, 8, TINY_NET)
    from meddiff.common.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "pixel.pt", {"model": initial_weights(pixel)}, pixel.model_meta())
    spec = _latent_spec(autoencoder)
    with pytest.raises(ConfigError, match="a pixel-space model, the run is a latent model on autoencoder"):
        load_initial_model(tmp_path / "pixel.pt", spec, initial_weights(spec))


def test_a_site_that_pins_autoencoders_refuses_any_other_and_pixel_runs(autoencoder):
    spec = _latent_spec(autoencoder)
    sha = file_sha256(autoencoder)
    assert autoencoder_refusal(spec.to_config(), TrustConfig()) == ""
    assert autoencoder_refusal(spec.to_config(), TrustConfig(autoencoders=(sha,))) == ""
    refusal = autoencoder_refusal(spec.to_config(), TrustConfig(autoencoders=("a" * 64,)))
    assert f"autoencoder sha256 {sha[:16]}" in refusal and "[trust] autoencoders" in refusal
    pixel = RunSpec(PHANTOM_SCHEMA, 16, TINY_NET).to_config()
    assert "pixel-space run" in autoencoder_refusal(pixel, TrustConfig(autoencoders=(sha,)))
    assert autoencoder_refusal(pixel, TrustConfig(autoencoders=("pixel",))) == ""


def test_a_delivered_latent_model_is_whole_and_the_tasks_read_it(autoencoder, tmp_path):
    spec = _latent_spec(autoencoder)
    weights = initial_weights(spec)
    layout = spec.weight_layout()
    delivery = {"run": "r1", "round": 2, "rounds": 2, "final": True, "sites": ["1"]}
    metadata = Metadata(run_id=7, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                        group_id="1", created_at=time.time(), ttl=600, message_type=messages.DELIVER_MESSAGE_TYPE)
    message = Message(metadata=metadata, content=RecordDict({
        "arrays": pack(weights, layout), "ema": pack(weights, layout),
        "config": ConfigRecord({**spec.message_config(), messages.DELIVERY: json.dumps(delivery)})}))
    path = store_delivered_model(message, ModelStore(tmp_path / "models"))
    loaded = load_model(path, device="cpu", latent_ok=True)
    assert loaded.codec is not None and loaded.resolution == 16 and loaded.schema == PHANTOM_SCHEMA
    assert loaded.codec.file.sha256 == file_sha256(autoencoder)
    with pytest.raises(CheckpointError, match="latent diffusion model"):
        load_model(path, device="cpu")


SCENARIO = """name = "latent"
[scenario]
data = "phantom"
sites = 2
missing_channels = [[], ["t2"]]
resolution = 16
examples_per_site = 12
[federation]
rounds = 2
local_steps = 3
[autoencoder]
widths = [8, 16]
latent_channels = 2
norm_num_groups = 8
rounds = 2
local_steps = 3
batch_size = 8
[privacy]
enabled = true
target_epsilon = 8.0
noise_multiplicity = 1
""" + TINY_MODEL_TABLES


@pytest.fixture(scope="module")
def both_stages(tmp_path_factory):
    """One run, both stages, DP-SGD at both virtual hospitals (one of them without t2) in both stages."""
    folder = tmp_path_factory.mktemp("latent")
    (folder / "latent.toml").write_text(SCENARIO)
    assert main(["simulate", str(folder / "latent.toml"), "--stage", "both", "--out", str(folder / "run")]) == 0
    return folder / "run"


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_one_run_trains_the_autoencoder_then_the_denoiser_on_its_latents(both_stages):
    stage_one = _lines(both_stages / "autoencoder" / "registry.jsonl")
    assert [e["round"] for e in stage_one] == [1, 2] and all(len(e["sites"]) == 2 for e in stage_one)
    autoencoder = load_autoencoder(stage_one[-1]["path"])  # each stage-1 round is a stage-1 file
    assert autoencoder.record["federated"] and autoencoder.record["scale_sites"] == 2
    assert autoencoder.scale > 0 and autoencoder.scale != 1.0 and autoencoder.resolution == 16
    first = load_autoencoder(stage_one[0]["path"])
    assert any(not torch.equal(first.weights[k], v) for k, v in autoencoder.weights.items())
    state, meta = load_checkpoint(both_stages / "checkpoints" / "round-0002.pt")
    assert meta["latent"]["sha256"] == autoencoder.sha256 and meta["resolution"] == 8 and "autoencoder" in state
    assert [e["round"] for e in _lines(both_stages / "registry.jsonl")] == [1, 2]
    assert "Latent diffusion" in (both_stages / "report.html").read_text()


@pytest.mark.slow
def test_the_ledger_composes_both_stages_within_the_target_and_lists_them_apart(both_stages):
    from meddiff.privacy.ledger import PrivacyLedger

    for site in (0, 1):
        ledger = PrivacyLedger(both_stages / "privacy" / f"site-{site}.sqlite")
        entries = [e for e in ledger.entries() if e["status"] == "released"]
        stage_one = [e for e in entries if e["run"].endswith("/autoencoder")]
        stage_two = [e for e in entries if not e["run"].endswith("/autoencoder")]
        assert len(stage_one) == 2 and len(stage_two) == 2
        assert all("autoencoder" in e["trained"] for e in stage_one)
        after_one, total = stage_one[-1]["epsilon_total"], stage_two[-1]["epsilon_total"]
        assert 0.3 * 8.0 * 0.9 < after_one <= 0.3 * 8.0 + 0.05  # stage 1 spends its share of the target
        assert after_one < total <= 8.0 + 0.05  # composed with stage 2, within the site's one target


@pytest.mark.slow
def test_a_stored_autoencoder_starts_stage_two_and_the_tasks_read_its_model(both_stages, tmp_path, capsys):
    """`simulate --autoencoder FILE` through the parser: a stage-1 file of another size is refused by name before
    anything starts; the stage-2 run of `--stage both` is the run on a stored file, and the tasks read its model
    (tests/common/latent/test_latent.py runs them on a latent model)."""
    stored = _lines(both_stages / "autoencoder" / "registry.jsonl")[-1]["path"]
    scenario = tmp_path / "latent.toml"
    scenario.write_text(SCENARIO.replace("resolution = 16", "resolution = 32"))
    capsys.readouterr()
    assert main(["simulate", str(scenario), "--autoencoder", stored, "--out", str(tmp_path / "run")]) == 2
    assert "trained at 16 px, the run's [schema] resolution is 32: set resolution = 16" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
    spec = latent_run(RunSpec(PHANTOM_SCHEMA, 16, TINY_NET), stored, "test")
    state, meta = load_checkpoint(both_stages / "checkpoints" / "round-0002.pt")
    assert meta["latent"]["sha256"] == file_sha256(stored) and meta["schema"]["channels"][0] == "z0.t1"
    start = initial_weights(spec)
    assert any(not torch.equal(start[k], state["model"][k]) for k in start)
    assert all(0 < s["eval-loss"] < 5 for m in _lines(both_stages / "metrics.jsonl") for s in m["evaluate"].values())
    loaded = load_model(both_stages / "checkpoints" / "round-0002.pt", device="cpu", latent_ok=True)
    assert loaded.codec.file.sha256 == file_sha256(stored) and loaded.resolution == 16  # what the tasks read
