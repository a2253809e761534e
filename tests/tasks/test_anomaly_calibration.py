"""Anomaly maps as the published pipelines make them, the patched and multi-depth methods, and thresholds
calibrated on healthy validation data and then used for decisions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.common.diffusion.loading import load_model
from meddiff.tasks.anomaly import METHODS, AnomalySettings, _partial_diffusion, residual_error
from meddiff.tasks.anomaly_maps import foreground, median_filter
from meddiff.tasks.anomaly_thresholds import calibrate, load_thresholds, thresholds_path


def test_the_median_filter_removes_a_lone_pixel_and_keeps_a_lesion():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 2, 2] = 1.0  # reconstruction noise
    x[0, 0, 8:13, 8:13] = 1.0  # a 5 x 5 lesion
    out = median_filter(x, 3)
    assert out[0, 0, 2, 2] == 0 and bool((out[0, 0, 9:12, 9:12] == 1).all())


def test_the_foreground_excludes_the_dark_background_and_closes_small_gaps():
    images = torch.zeros(1, 1, 16, 16)
    images[0, 0, 4:12, 4:12] = 0.6
    images[0, 0, 7, 4:12] = 0.0  # a one-pixel dark line through the body
    body = foreground(images, torch.ones(1, 1, 1, 1), level=0.05)
    assert bool(body[0, 0, 7, 6:10].all()) and not bool(body[0, 0, 0:2].any())
    assert bool(foreground(images, torch.ones(1, 1, 1, 1), level=0.0).all())


def test_the_residual_scores_the_chosen_sign():
    images, healthy = torch.tensor([0.5, -0.5, 0.0]), torch.zeros(3)  # brighter, darker, equal ([-1, 1] units)
    assert residual_error(images, healthy, "absolute").tolist() == [0.25, 0.25, 0.0]
    assert residual_error(images, healthy, "brighter").tolist() == [0.25, 0.0, 0.0]
    assert residual_error(images, healthy, "darker").tolist() == [0.0, 0.25, 0.0]


def test_calibration_flags_the_stated_fraction_of_healthy_pixels_and_images():
    rng = np.random.default_rng(0)
    maps, scores = rng.exponential(size=(50, 1, 16, 16)), rng.normal(size=50)
    body = np.ones_like(maps, dtype=bool)
    body[:, :, :4] = False
    thresholds = calibrate(maps, body, scores, fpr=0.05)
    assert (maps[body] > thresholds["pixel"]).mean() == pytest.approx(0.05, abs=0.002)
    assert (scores > thresholds["image"]).mean() == pytest.approx(0.05, abs=0.021)
    with pytest.raises(ValueError, match="false-positive rate"):
        calibrate(maps, body, scores, fpr=0.0)


def test_pddpm_keeps_the_known_pixels_exactly_and_redraws_only_the_patch(tiny_model):
    loaded = load_model(tiny_model, device="cpu")
    images = torch.rand(2, loaded.schema.num_channels, 16, 16) * 2 - 1
    keep = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    keep[..., :8, :8] = False
    drawn = _partial_diffusion(loaded, images, None, 0.5, 4, torch.Generator().manual_seed(0), keep)
    assert torch.equal(drawn[..., 8:, :], images[..., 8:, :]) and torch.equal(drawn[..., :, 8:], images[..., :, 8:])
    assert not torch.allclose(drawn[..., :8, :8], images[..., :8, :8])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_through_the_command(tiny_model, tmp_path, method):
    assert main(["detect-anomalies", "--model", str(tiny_model), "--data", "phantom", "--out", str(tmp_path),
                 "--method", method, "--steps", "2", "--limit", "4", "--depths", "0.3,0.6", "--median", "3",
                 "--residual", "brighter"]) == 0
    report = json.loads((tmp_path / "anomalies.json").read_text())
    assert report["settings"]["method"] == method and np.isfinite(report["metrics"]["pixel_auroc"])
    assert report["settings"]["residual"] == "brighter"
    assert len(report["images"]) == 4 and report["thresholds"].startswith("none")


def test_thresholds_calibrated_on_healthy_data_give_decisions_for_the_same_model_and_settings(tiny_model, tmp_path,
                                                                                             capsys):
    model = tmp_path / "model.pt"
    shutil.copy(tiny_model, model)
    common = ["--model", str(model), "--data", "phantom", "--steps", "2", "--limit", "12"]
    assert main(["detect-anomalies", *common, "--out", str(tmp_path / "cal"), "--calibrate-fpr", "0.1"]) == 0
    saved = load_thresholds(model, AnomalySettings(steps=2))
    assert thresholds_path(model).exists() and saved["fpr"] == 0.1
    calibration = json.loads((tmp_path / "cal" / "anomalies-calibration.json").read_text())
    assert 0 < calibration["examples"] < 12  # only the phantom's lesion-free draws
    assert main(["detect-anomalies", *common, "--out", str(tmp_path / "run"), "--seed", "1"]) == 0
    report = json.loads((tmp_path / "run" / "anomalies.json").read_text())
    metrics, arrays = report["metrics"], np.load(tmp_path / "run" / "anomalies.npz")
    assert metrics["pixel_threshold"] == saved["pixel"] and 0 <= metrics["dice_at_threshold"] <= 1
    assert {"sensitivity_at_threshold", "specificity_at_threshold", "pixel_auprc"} <= set(metrics)
    assert np.array_equal(arrays["decision"], arrays["map"] > saved["pixel"])
    assert [row["flagged"] for row in report["images"]] == (arrays["score"] > saved["image"]).tolist()
    # other settings were never calibrated: no decisions, and the report says how to get them
    assert main(["detect-anomalies", *common, "--out", str(tmp_path / "deeper"), "--depth", "0.7"]) == 0
    assert json.loads((tmp_path / "deeper" / "anomalies.json").read_text())["thresholds"].startswith("none")
    assert main(["detect-anomalies", *common, "--out", str(tmp_path / "bad"), "--calibrate-fpr", "5"]) == 2
    assert "--calibrate-fpr must be in (0, 1)" in capsys.readouterr().err
    assert main(["detect-anomalies", *common, "--out", str(tmp_path / "bad"), "--score-channels", "flair,dwi"]) == 2
    assert "--score-channels: scored channel(s) ['dwi'] are not image channels" in capsys.readouterr().err


def test_an_image_without_any_scored_channel_is_named_not_given_a_healthy_zero_map(tiny_model):
    from meddiff.tasks.anomaly import anomaly_task
    from meddiff.tasks.task_data import TaskData, load_task_data

    loaded = load_model(tiny_model, device="cpu")
    data = load_task_data("phantom", loaded, task="anomaly", phantom_n=5)
    available = data.available.clone()
    available[[1, 3], loaded.schema.channels.index("flair")] = False  # two images were acquired without FLAIR
    data = TaskData(data.images, available, data.labels, data.truth, data.source)
    settings = AnomalySettings(steps=2, channels=("flair",))
    report = anomaly_task(loaded, data, settings).report
    assert [row["index"] for row in report["images"]] == [0, 2, 4]
    assert report["not_scored"]["indices"] == [1, 3]
    available[:, loaded.schema.channels.index("flair")] = False
    with pytest.raises(ValueError, match=r"none of its 5 images has any of the scored channels \['flair'\]"):
        anomaly_task(loaded, TaskData(data.images, available, data.labels, data.truth, data.source), settings)
