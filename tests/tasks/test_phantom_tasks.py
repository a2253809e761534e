"""The tasks on a model that has learnt the phantom (the session's 1500-step model), scored against fresh phantom
draws with known lesions: these are the figures a task must reach on data whose truth is known exactly."""

from __future__ import annotations

import json

import pytest

from meddiff.cli import main


def _report(tmp_path, command: list[str], model) -> dict:
    assert main([command[0], "--model", str(model), "--data", "phantom", "--out", str(tmp_path), *command[1:]]) == 0
    return json.loads(next(tmp_path.glob("*.json")).read_text())


@pytest.mark.slow
def test_counterfactual_anomaly_detection_finds_the_phantoms_lesions(tmp_path, trained_phantom):
    report = _report(tmp_path, ["detect-anomalies", "--method", "counterfactual", "--steps", "10"], trained_phantom)
    metrics = report["metrics"]
    assert report["examples"] == 64 and 0.2 < metrics["anomalous_fraction"] < 0.8
    assert metrics["auroc"] >= 0.9, metrics
    assert metrics["pixel_auroc"] > 0.8, metrics


@pytest.mark.slow
def test_anoddpm_runs_and_is_scored_like_the_counterfactual(tmp_path, trained_phantom):
    report = _report(tmp_path, ["detect-anomalies", "--method", "anoddpm", "--steps", "10", "--limit", "16"],
                     trained_phantom)
    assert {"auroc", "auprc", "pixel_auroc", "best_dice"} <= set(report["metrics"])


@pytest.mark.slow
def test_denoising_beats_the_noisy_input_by_5_db_and_non_local_means(tmp_path, trained_phantom):
    metrics = _report(tmp_path, ["denoise", "--simulate", "0.1", "--limit", "32"], trained_phantom)["metrics"]
    psnr = {name: m["psnr"] for name, m in metrics.items()}
    assert psnr["diffusion"] >= psnr["noisy input"] + 5.0, psnr
    assert psnr["diffusion"] > psnr["non-local means"], psnr


@pytest.mark.slow
def test_super_resolution_beats_bicubic_and_keeps_data_consistency(tmp_path, trained_phantom):
    report = _report(tmp_path, ["super-resolve", "--simulate", "--factor", "2", "--limit", "32"], trained_phantom)
    assert report["metrics"]["diffusion"]["psnr"] > report["metrics"]["bicubic"]["psnr"], report["metrics"]
    assert report["data_consistency_max_abs_error"] < 1e-5
