"""Latent diffusion (issue 23, first part): the shared per-channel autoencoder, its file, and stage 2 on its
latents through the real commands: train-autoencoder, train --autoencoder, generate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.common.checkpoint import CheckpointError, file_sha256, load_checkpoint
from meddiff.common.data.training_set import load_training_set
from meddiff.common.diffusion.loading import load_model
from meddiff.common.latent.autoencoder import AutoencoderFile, AutoencoderSpec, build_autoencoder, load_autoencoder
from meddiff.common.latent.codec import LatentCodec
from meddiff.common.latent.training import AutoencoderRecipe, train_autoencoder

TINY_AE = AutoencoderSpec(channels=(8, 16), latent_channels=2, norm_num_groups=8)
TINY_MODEL = ["--channels", "8,16", "--batch-size", "4", "--phantom-n", "16"]


def untrained(schema, resolution=16) -> AutoencoderFile:
    torch.manual_seed(0)
    return AutoencoderFile(TINY_AE, schema, resolution, 1.0, build_autoencoder(TINY_AE).state_dict())


def test_each_channel_is_encoded_on_its_own_so_availability_carries_over():
    data = load_training_set("phantom", resolution=16, phantom_n=4).tensors
    codec = LatentCodec(untrained(data.schema))
    assert codec.latent_schema.channels[:2] == ("z0.t1", "z1.t1") and not codec.latent_schema.mask_indices
    available = data.available.clone()
    available[0, 1] = False  # example 0 has no t2
    latents = codec.encode(data.images, available)
    assert latents.shape == (4, 2 * data.schema.num_channels, 8, 8)
    assert torch.all(latents[0, 2:4] == 0) and torch.any(latents[1, 2:4] != 0)
    assert torch.equal(codec.latent_available(available)[0, 2:4], torch.tensor([False, False]))
    changed = data.images.clone()
    changed[:, 1] = torch.rand_like(changed[:, 1])  # another t2 does not move t1's latents
    assert torch.allclose(codec.encode(changed)[:, :2], codec.encode(data.images)[:, :2], atol=1e-6)
    decoded = codec.decode(latents)
    assert decoded.shape == data.images.shape and decoded.abs().max() <= 1.0
    with pytest.raises(ValueError, match="multiple of 2"):
        codec.latent_size(15)


def test_training_lowers_the_loss_and_scales_the_latents_to_the_data_spread(tmp_path):
    data = load_training_set("phantom", resolution=16, phantom_n=16).tensors
    trained, summary = train_autoencoder(data, TINY_AE, AutoencoderRecipe(steps=40, batch_size=8), device="cpu")
    assert summary["loss_last"] < summary["loss_first"]
    codec = LatentCodec(trained)
    latents = codec.encode(data.images, data.available)
    assert float(latents[codec.latent_available(data.available)].std()) == pytest.approx(0.5, rel=1e-3)
    path = trained.save(tmp_path / "autoencoder.pt")
    loaded = load_autoencoder(path)
    assert loaded.sha256 == file_sha256(path) and loaded.scale == trained.scale and loaded.resolution == 16
    assert torch.allclose(LatentCodec(loaded).encode(data.images), codec.encode(data.images))


def test_fedprox_keeps_a_stage_one_round_near_the_global_autoencoder():
    """The proximal term mu / 2 ||w - w_global||^2 (a FedProx run's stage 1): the same steps and batches move the
    weights less from where the round started, the stronger mu is."""
    from meddiff.common.latent.training import single_channel_images, train_steps

    images = single_channel_images(load_training_set("phantom", resolution=16, phantom_n=8).tensors)
    recipe = AutoencoderRecipe(steps=6, batch_size=4, learning_rate=1e-2)

    def moved(mu: float) -> float:
        torch.manual_seed(0)
        network = build_autoencoder(TINY_AE)
        start = [p.detach().clone() for p in network.parameters()]
        train_steps(network, images, recipe, 6, first_step=0, total_steps=6, generator=torch.Generator().manual_seed(0),
                    device=torch.device("cpu"), proximal_mu=mu)
        return float(sum(((p.detach() - s) ** 2).sum() for p, s in zip(network.parameters(), start)).sqrt())

    free, held = moved(0.0), moved(1e4)
    assert held < 0.5 * free, (held, free)


def test_a_dp_round_of_a_fedprox_run_says_it_trains_without_the_proximal_term(caplog):
    from meddiff.client.round import warn_proximal_unused
    from meddiff.common.messages import TrainInstruction

    warn_proximal_unused(TrainInstruction(2, 3, 5, proximal_mu=0.0), "site-a")
    assert not caplog.records
    warn_proximal_unused(TrainInstruction(2, 3, 5, proximal_mu=0.1), "site-a")
    assert "FedProx's proximal term (mu 0.1) is not applied under DP-SGD" in caplog.text


def test_a_file_of_another_kind_is_refused_by_name(tiny_model):
    with pytest.raises(CheckpointError, match="not an autoencoder"):
        load_autoencoder(tiny_model)


def test_stage_one_and_two_and_generation_through_the_commands(tmp_path, capsys):
    ae, model, samples = tmp_path / "ae", tmp_path / "model", tmp_path / "samples"
    assert main(["train-autoencoder", "--data", "phantom", "--out", str(ae), "--steps", "20", "--widths", "8,16",
                 "--latent-channels", "2", "--resolution", "16", "--phantom-n", "16", "--batch-size", "8"]) == 0
    record = json.loads((ae / "autoencoder.json").read_text())
    assert set(record["quality"]["channels"]) == {"t1", "t2", "flair", "ct", "mask"}
    assert record["sha256"] == file_sha256(ae / "autoencoder.pt")
    assert main(["train", "--data", "phantom", "--out", str(model), "--steps", "4", "--autoencoder",
                 str(ae / "autoencoder.pt"), *TINY_MODEL]) == 0
    state, meta = load_checkpoint(model / "model.pt")
    assert meta["latent"]["sha256"] == record["sha256"] and meta["resolution"] == 8 and "autoencoder" in state
    assert meta["schema"]["channels"][:2] == ["z0.t1", "z1.t1"]
    loaded = load_model(model / "model.pt", device="cpu", latent_ok=True)
    assert loaded.resolution == 16 and loaded.schema.channels == ("t1", "t2", "flair", "ct", "mask")
    given = tmp_path / "t1.npy"
    np.save(given, np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16))
    assert main(["generate", "--model", str(model / "model.pt"), "--out", str(samples), "--n", "3", "--steps", "3",
                 "--given", f"t1={given}"]) == 0
    drawn = np.load(samples / "samples.npz")
    assert drawn["t2"].shape[1:] == (16, 16) and np.abs(drawn["t2"]).max() <= 1.0
    assert np.allclose(drawn["t1"], drawn["t1"][0]) and drawn["t1"].std() > 0.1  # given pixels come back as given
    # translation and segmentation draw in latent space and decode the drawn channel
    for task, extra in (("translate", ["--from", "t1,flair", "--to", "t2"]), ("segment", [])):
        assert main([task, "--model", str(model / "model.pt"), "--data", "phantom", "--limit", "2", "--samples", "1",
                     "--steps", "2", "--out", str(tmp_path / task), *extra]) == 0
        report = json.loads(next((tmp_path / task).glob("*.json")).read_text())
        assert report["metrics"], report
    # reconstruction: decode, put the measured lines back, encode again at every step; the result keeps them exactly
    from meddiff.tasks import reconstruct as rec
    from meddiff.tasks.settings import ReconstructSettings

    truth = (load_training_set("phantom", resolution=16, phantom_n=2).tensors.images[:, 1] + 1) / 2
    mask = rec.expand_mask(rec.cartesian_mask(16, 4, seed=0), (16, 16))
    y = rec.fft2c(truth.to(torch.complex64)) * mask
    out = rec.reconstruct(loaded, y, mask, 1, settings=ReconstructSettings(steps=3))
    assert out.shape == (2, 16, 16) and torch.allclose(rec.fft2c(out)[:, mask], y[:, mask], atol=1e-4)
    assert main(["reconstruct", "--model", str(model / "model.pt"), "--data", "phantom", "--channel", "t2",
                 "--limit", "2", "--steps", "2", "--out", str(tmp_path / "reconstruct")]) == 0
    assert main(["super-resolve", "--model", str(model / "model.pt"), "--data", "phantom", "--simulate", "--factor",
                 "2", "--limit", "2", "--steps", "2", "--out", str(tmp_path / "sr")]) == 0
    report = json.loads((tmp_path / "sr" / "super_resolve.json").read_text())
    assert report["data_consistency_max_abs_error"] < 1e-4  # the downsampled result is the input
    # denoising and anomaly detection work on the latents and score in pixels
    assert main(["denoise", "--model", str(model / "model.pt"), "--data", "phantom", "--limit", "2", "--steps", "2",
                 "--simulate", "0.1", "--no-baselines", "--out", str(tmp_path / "denoise")]) == 0
    denoised = json.loads((tmp_path / "denoise" / "denoise.json").read_text())
    assert 0 < denoised["entry_time_mean"] < 1  # entered at the noise level the latents carry
    assert main(["detect-anomalies", "--model", str(model / "model.pt"), "--data", "phantom", "--limit", "2",
                 "--steps", "2", "--method", "anoddpm", "--out", str(tmp_path / "anomalies")]) == 0
    maps = np.load(tmp_path / "anomalies" / "anomalies.npz")
    assert maps["map"].shape[-2:] == (16, 16) and np.isfinite(maps["map"]).all()
    # resuming keeps the autoencoder; sizes are checked
    assert main(["train", "--data", "phantom", "--out", str(model), "--steps", "6", "--resume",
                 "--phantom-n", "16"]) == 0
    assert load_checkpoint(model / "model.pt")[1]["latent"]["sha256"] == record["sha256"]
    capsys.readouterr()
    assert main(["train", "--data", "phantom", "--out", str(tmp_path / "m2"), "--autoencoder",
                 str(ae / "autoencoder.pt"), "--resolution", "32", *TINY_MODEL]) == 2
    assert "trained at 16 px; 32 px was asked for" in capsys.readouterr().err


def test_volumes_train_a_3d_latent_model_that_segments_volumes(tmp_path):
    """[data] slices = false: the autoencoder and the denoiser are 3D, and segmentation decodes 3D masks."""
    import nibabel as nib

    g = np.random.default_rng(0)
    for folder in ("images", "labels"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for i in range(4):
        label = np.zeros((16, 16, 16), dtype=np.uint8)
        label[5:11, 5:11, 5:11] = 1
        image = (g.random((16, 16, 16)) * 0.2 + label).astype(np.float32)
        for folder, array in (("images", image), ("labels", label)):
            nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "data" / folder / f"case_{i}.nii.gz")
    config = tmp_path / "site.toml"
    config.write_text(f'[data]\npath = "{tmp_path / "data"}"\nslices = false\nresolution = 16\n')
    data = ["--data", str(tmp_path / "data"), "--config", str(config)]
    assert main(["train-autoencoder", *data, "--out", str(tmp_path / "ae"), "--steps", "3", "--widths", "8,16",
                 "--batch-size", "2"]) == 0
    assert load_autoencoder(tmp_path / "ae" / "autoencoder.pt").spec.spatial_dims == 3
    assert main(["train", *data, "--autoencoder", str(tmp_path / "ae" / "autoencoder.pt"), "--out",
                 str(tmp_path / "m"), "--steps", "1", "--channels", "8,16", "--batch-size", "2"]) == 0
    loaded = load_model(tmp_path / "m" / "model.pt", device="cpu", latent_ok=True)
    assert loaded.spec.spatial_dims == 3 and loaded.resolution == 16
    assert main(["segment", "--model", str(tmp_path / "m" / "model.pt"), *data, "--out", str(tmp_path / "s"),
                 "--samples", "1", "--steps", "2"]) == 0
    assert np.load(tmp_path / "s" / "segment.npz")["labels"].shape == (4, 16, 16, 16)
