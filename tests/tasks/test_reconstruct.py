"""MRI reconstruction parts: masks, the k-space operators, data consistency and the refusals, on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.tasks import reconstruct as rec


def test_masks_sample_the_centre_and_reach_the_acceleration():
    for kind in rec.MASK_KINDS:
        for acceleration in (4, 8):
            mask = rec.cartesian_mask(64, acceleration, kind=kind, seed=3)
            assert int(mask.sum()) == 64 // acceleration
            assert mask[31:34].all()  # the fully sampled centre around the DC column (32)
    assert not torch.equal(rec.cartesian_mask(64, 4, seed=1), rec.cartesian_mask(64, 4, seed=2))
    with pytest.raises(ValueError, match="kind"):
        rec.cartesian_mask(64, 4, kind="radial")


def test_the_centred_fft_is_orthonormal_and_inverts():
    x = torch.rand(2, 16, 16, dtype=torch.float64).to(torch.complex128)
    k = rec.fft2c(x)
    assert torch.allclose(rec.ifft2c(k), x) and torch.isclose(k.abs().norm(), x.abs().norm())


def test_data_consistency_keeps_the_measured_lines_and_only_those():
    g = torch.Generator().manual_seed(0)
    truth, guess = torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    mask = rec.expand_mask(rec.cartesian_mask(16, 4, seed=0), (16, 16))
    y = rec.fft2c(truth.to(torch.complex64)) * mask
    fixed = rec.fft2c(rec.data_consistent(guess, y, mask, torch.ones_like(y)))
    assert torch.allclose(fixed[:, mask], y[:, mask], atol=1e-5)
    assert torch.allclose(fixed[:, ~mask], rec.fft2c(guess.to(torch.complex64))[:, ~mask], atol=1e-5)


def test_a_mask_of_the_wrong_shape_is_refused_with_both_shapes():
    with pytest.raises(ValueError, match="48 columns but the k-space is 64 x 64"):
        rec.expand_mask(torch.ones(48, dtype=torch.bool), (64, 64))
    with pytest.raises(ValueError, match=r"\(32, 32\) but the k-space is 64 x 64"):
        rec.expand_mask(torch.ones(32, 32, dtype=torch.bool), (64, 64))


def test_cropping_kspace_low_passes_and_keeps_intensities():
    image = torch.ones(1, 64, 64)
    k = rec.fft2c(image.to(torch.complex64))
    cropped, mask = rec.centre_crop_kspace(k, torch.ones(64, 64, dtype=torch.bool), 32)
    assert cropped.shape == (1, 32, 32) and mask.shape == (32, 32)
    assert torch.allclose(rec.ifft2c(cropped).real, torch.ones(1, 32, 32), atol=1e-5)
    with pytest.raises(ValueError, match="smaller than the model"):
        rec.centre_crop_kspace(k[:, :16, :16], torch.ones(16, 16, dtype=torch.bool), 32)


def test_tv_beats_zero_filling_on_a_piecewise_constant_image():
    truth = torch.zeros(2, 32, 32)
    truth[:, 8:24, 10:20] = 1.0
    truth[:, 12:16, 4:28] = 0.5
    mask = rec.expand_mask(rec.cartesian_mask(32, 4, seed=0), (32, 32))
    y = rec.fft2c(truth.to(torch.complex64)) * mask
    error = lambda x: float(((x - truth) ** 2).mean())  # noqa: E731
    assert error(rec.tv_reconstruction(y, mask, torch.ones_like(y), weight=0.01)) < 0.7 * error(rec.zero_filled(y, mask))


def test_the_phase_estimate_follows_a_smooth_phase():
    magnitude = torch.ones(1, 32, 32)
    smooth = 0.5 * torch.sin(2 * torch.pi * torch.arange(32) / 32).reshape(1, 1, 32).expand(1, 32, 32)
    image = magnitude * torch.exp(1j * smooth)
    columns = rec.cartesian_mask(32, 4, seed=0)
    phase = rec.estimate_phase(rec.fft2c(image) * columns, columns)
    assert torch.allclose(torch.angle(phase)[0], smooth[0], atol=0.05)


def test_reconstruct_command_is_data_consistent_and_reports_three_methods(tmp_path, tiny_model):
    out = tmp_path / "rec"
    assert main(["reconstruct", "--model", str(tiny_model), "--data", "phantom", "--channel", "t2", "--out", str(out),
                 "--limit", "3", "--steps", "4", "--acceleration", "4"]) == 0
    report = json.loads((out / "reconstruct.json").read_text())
    assert set(report["metrics"]) == {"zero_filled", "tv", "diffusion"}
    assert report["data_consistency_max_relative_error"] < 1e-5 and report["acceleration"] == pytest.approx(4.0)
    arrays = np.load(out / "reconstruct.npz")
    assert arrays["diffusion"].shape == (3, 16, 16) and (out / "reconstruct.png").exists()


def test_reconstruct_from_measured_kspace_with_given_contrasts(tmp_path, tiny_model):
    g = np.random.default_rng(0)
    image = g.random((2, 32, 32)) * np.exp(1j * np.linspace(0, 0.3, 32))[None, None]
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    columns = rec.cartesian_mask(32, 4, seed=0).numpy()
    np.savez(tmp_path / "k.npz", kspace=(kspace * columns).astype(np.complex64), mask=columns)
    out = tmp_path / "rec"
    assert main(["reconstruct", "--model", str(tiny_model), "--kspace", str(tmp_path / "k.npz"), "--channel", "flair",
                 "--out", str(out), "--steps", "3"]) == 0
    report = json.loads((out / "reconstruct.json").read_text())
    assert report["examples"] == 2 and report["data_consistency_max_relative_error"] < 1e-5
    assert np.load(out / "reconstruct.npz")["complex"].shape == (2, 16, 16)  # cropped to the model's 16 px


@pytest.mark.parametrize("extra, message", [
    (["--channel", "pd"], "'pd' is not an image channel"),
    (["--channel", "mask"], "'mask' is not an image channel"),
    (["--channel", "t2", "--given", "t2"], "both reconstructed and --given"),
])
def test_channels_outside_the_schema_are_refused(tmp_path, tiny_model, extra, message, capsys):
    assert main(["reconstruct", "--model", str(tiny_model), "--data", "phantom", "--out", str(tmp_path),
                 "--limit", "2", *extra]) != 0
    assert message in capsys.readouterr().err


def test_kspace_that_does_not_match_its_mask_is_refused(tmp_path, tiny_model, capsys):
    np.save(tmp_path / "k.npy", np.ones((2, 32, 32), dtype=np.complex64))
    np.save(tmp_path / "m.npy", np.ones(24, dtype=bool))
    assert main(["reconstruct", "--model", str(tiny_model), "--kspace", str(tmp_path / "k.npy"), "--mask",
                 str(tmp_path / "m.npy"), "--out", str(tmp_path / "o")]) != 0
    assert "24 columns but the k-space is 32 x 32" in capsys.readouterr().err
    np.save(tmp_path / "real.npy", np.ones((2, 32, 32), dtype=np.float32))
    assert main(["reconstruct", "--model", str(tiny_model), "--kspace", str(tmp_path / "real.npy"), "--mask",
                 str(tmp_path / "m.npy"), "--out", str(tmp_path / "o")]) != 0
    assert "must be complex" in capsys.readouterr().err
