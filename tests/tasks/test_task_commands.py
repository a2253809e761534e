"""The task sub-commands through the real console entry point, on a tiny phantom model (fast: the model is barely
trained, so these tests check the plumbing, the guarantees that hold for any model, and the errors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.tasks.super_resolve import downsample

from tests.conftest import TINY_TRAIN_FLAGS as TINY


@pytest.mark.parametrize("factor", [2, 4])
def test_super_resolved_images_downsample_back_to_their_input(tiny_model, tmp_path, factor):
    out = tmp_path / f"x{factor}"
    assert main(["super-resolve", "--model", str(tiny_model), "--data", "phantom", "--out", str(out), "--simulate",
                 "--factor", str(factor), "--steps", "4", "--limit", "6"]) == 0
    arrays = np.load(out / "super_resolve.npz")
    high, low = torch.from_numpy(arrays["high"]), torch.from_numpy(arrays["low"])
    assert high.shape[-1] == 16 and low.shape[-1] == 16 // factor
    assert float((downsample(high, factor) - low).abs().max()) < 1e-5
    report = json.loads((out / "super_resolve.json").read_text())
    assert report["data_consistency_max_abs_error"] < 1e-5
    assert set(report["metrics"]) == {"bicubic", "diffusion"}


def test_denoise_reports_the_model_and_both_baselines_against_the_clean_images(tiny_model, tmp_path):
    assert main(["denoise", "--model", str(tiny_model), "--data", "phantom", "--out", str(tmp_path),
                 "--simulate", "0.1", "--steps", "3", "--limit", "4"]) == 0
    report = json.loads((tmp_path / "denoise.json").read_text())
    assert set(report["metrics"]) == {"noisy input", "diffusion", "non-local means", "total variation"}
    # PSNR of the noisy input at sigma 0.1 is 20 dB by definition (the clean range is [0, 1])
    assert abs(report["metrics"]["noisy input"]["psnr"] - 20.0) < 0.5
    assert 0.07 < report["estimated_level_mean"] < 0.14
    assert (tmp_path / "denoise.png").exists()


def test_anomaly_maps_are_scored_against_the_phantom_masks(tiny_model, tmp_path):
    assert main(["detect-anomalies", "--model", str(tiny_model), "--data", "phantom", "--out", str(tmp_path),
                 "--method", "counterfactual", "--steps", "3", "--limit", "8"]) == 0
    report = json.loads((tmp_path / "anomalies.json").read_text())
    assert report["ground_truth"] == "masks"
    assert {"auroc", "auprc", "pixel_auroc", "best_dice"} <= set(report["metrics"])
    arrays = np.load(tmp_path / "anomalies.npz")
    assert arrays["map"].shape == (8, 1, 16, 16) and arrays["score"].shape == (8,)


@pytest.mark.parametrize("command", [["detect-anomalies"], ["denoise", "--simulate", "0.1"],
                                     ["super-resolve", "--simulate"], ["generate", "--n", "2", "--steps", "2"]])
def test_data_whose_channels_the_checkpoint_lacks_is_refused_by_name(tiny_model, tmp_path, capsys, command):
    data = tmp_path / "pd.npz"
    np.savez(data, pd=np.random.default_rng(0).uniform(size=(3, 16, 16)).astype(np.float32))
    data_flag = "--audit-data" if command[0] == "generate" else "--data"
    assert main([command[0], "--model", str(tiny_model), data_flag, str(data), "--out", str(tmp_path / "out"),
                 *command[1:]]) == 2
    error = capsys.readouterr().err
    assert "['pd']" in error and "site.toml" in error and "t1" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments, message", [
    (["detect-anomalies", "--healthy-class", "normal", "--method", "counterfactual"], "'normal' is not one of"),
    (["detect-anomalies", "--depth", "1.5"], "depth and depths must be in (0, 1]"),
    (["denoise", "--simulate", "-1"], "--simulate must be > 0"),
    (["super-resolve", "--noise-level", "-0.1"], "noise_level must be >= 0"),
])
def test_wrong_task_settings_say_what_is_wrong(tiny_model, tmp_path, capsys, arguments, message):
    assert main([arguments[0], "--model", str(tiny_model), "--data", "phantom", "--out", str(tmp_path),
                 *arguments[1:]]) == 2
    assert message in capsys.readouterr().err


def test_a_simplex_noise_model_trains_and_anoddpm_uses_its_noise(tmp_path):
    out = tmp_path / "simplex"
    assert main(["train", "--data", "phantom", "--out", str(out), "--steps", "2", "--noise", "simplex", *TINY]) == 0
    assert main(["detect-anomalies", "--model", str(out / "model.pt"), "--data", "phantom", "--out",
                 str(tmp_path / "maps"), "--steps", "3", "--limit", "4"]) == 0
    report = json.loads((tmp_path / "maps" / "anomalies.json").read_text())
    assert report["noise"] == "simplex" and np.isfinite(report["metrics"]["pixel_auroc"])
