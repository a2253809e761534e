"""Translation: K-draw mean and variance of the target contrast given the sources, the histogram-matched baseline,
and the refusals (tiny model: plumbing and guarantees, not quality)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.common.diffusion.loading import load_model
from meddiff.tasks.translate import TranslateSettings, histogram_matched, translate

def test_histogram_matching_takes_the_reference_distribution():
    g = torch.Generator().manual_seed(0)
    source = torch.rand(2, 16, 16, generator=g)
    reference = torch.rand(4, 16, 16, generator=g) * 0.2 + 0.7
    matched = histogram_matched(source, reference)
    assert matched.min() >= reference.min() - 1e-6 and matched.max() <= reference.max() + 1e-6
    order = torch.argsort(source[0].flatten())  # monotone: the anatomy (ranks) is kept
    assert (matched[0].flatten()[order].diff() >= -1e-6).all()


def test_translation_gives_the_target_mean_and_variance_and_keeps_sources(tiny_model):
    loaded = load_model(tiny_model, device="cpu")
    c = loaded.schema.num_channels
    images = torch.rand(3, c, 16, 16) * 2 - 1
    given = torch.zeros(3, c, dtype=torch.bool)
    given[:, 0] = True
    mean, variance = translate(loaded, images, given, 1, TranslateSettings(samples=3, steps=2))
    assert mean.shape == variance.shape == (3, 16, 16) and (variance >= 0).all() and variance.sum() > 0
    with pytest.raises(ValueError, match="cannot also be a source"):
        translate(loaded, images, given, 0)


def test_translate_command_reports_both_methods(tmp_path, tiny_model):
    assert main(["translate", "--model", str(tiny_model), "--data", "phantom", "--from", "t1", "--to", "t2",
                 "--out", str(tmp_path), "--limit", "4", "--samples", "2", "--steps", "2"]) == 0
    report = json.loads((tmp_path / "translate.json").read_text())
    assert set(report["metrics"]) == {"histogram-matched source", "diffusion"}
    arrays = np.load(tmp_path / "translate.npz")
    assert arrays["translated"].shape == (4, 16, 16) and (tmp_path / "translate.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--from", "t1", "--to", "pd"], "'pd' is not an image channel"),
    (["--from", "mask", "--to", "t2"], "'mask' is not an image channel"),
    (["--from", "t1", "--to", "t1"], "both --from and --to"),
])
def test_channels_outside_the_schema_are_refused(tmp_path, tiny_model, extra, message, capsys):
    assert main(["translate", "--model", str(tiny_model), "--data", "phantom", "--out", str(tmp_path),
                 "--limit", "2", *extra]) != 0
    assert message in capsys.readouterr().err


def test_the_supervised_unet_baseline_is_trained_on_the_given_pairs(tmp_path, tiny_model):
    assert main(["translate", "--model", str(tiny_model), "--data", "phantom", "--from", "t1,flair", "--to", "t2",
                 "--out", str(tmp_path), "--limit", "4", "--samples", "1", "--steps", "2",
                 "--baseline-train", "phantom", "--baseline-epochs", "2"]) == 0
    report = json.loads((tmp_path / "translate.json").read_text())
    assert report["supervised_unet"]["epochs"] == 2 and "supervised UNet" in report["metrics"]
    assert np.load(tmp_path / "translate.npz")["supervised_unet"].shape == (4, 16, 16)
