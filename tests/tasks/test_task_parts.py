"""The pieces the tasks are built from: noise models, the entry time of denoising, the metrics, the classifier."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meddiff.common.diffusion.schedules import make_schedule
from meddiff.common.diffusion.simplex import draw_noise, simplex_noise
from meddiff.tasks.classifier import ClassifierRecipe, evaluate, train_classifier
from meddiff.tasks.metrics import pixel_scores
from meddiff.tasks.noise import add_noise
from meddiff.tasks.super_resolve import downsample, project, upsample_pinv


@pytest.mark.parametrize("schedule", ["ddpm", "vp", "subvp", "ve"])
@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.6])
def test_denoising_enters_where_the_schedule_has_the_images_noise(schedule, ratio):
    s = make_schedule(schedule)
    t = torch.tensor(s.time_for_noise_ratio(ratio), dtype=torch.float64)
    assert float(s.sigma(t) / s.alpha(t)) == pytest.approx(ratio, rel=0.05)


def test_noise_models_have_the_stated_level():
    g = torch.Generator().manual_seed(0)
    clean = torch.full((1, 1, 256, 256), 0.5)
    assert float((add_noise(clean, "gaussian", 0.1, g) - clean).std()) == pytest.approx(0.1, rel=0.03)
    ones = torch.ones(1, 1, 256, 256)
    assert float(add_noise(ones, "poisson", 0.1, g).std()) == pytest.approx(0.1, rel=0.05)  # std at intensity 1
    dark = add_noise(torch.zeros(1, 1, 256, 256), "rician", 0.1, g)
    assert float(dark.min()) >= 0 and float(dark.mean()) == pytest.approx(0.1 * math.sqrt(math.pi / 2), rel=0.03)
    with pytest.raises(ValueError, match="unknown noise model"):
        add_noise(clean, "speckle", 0.1, g)


def test_the_projection_reproduces_the_measurement_exactly():
    x = torch.randn(2, 3, 16, 16)
    y = downsample(torch.randn(2, 3, 16, 16), 4)
    assert torch.allclose(downsample(project(x, y, 4), 4), y, atol=1e-6)
    assert torch.allclose(downsample(upsample_pinv(y, 4), 4), y, atol=1e-6)  # A A+ = I


def test_pixel_metrics_reward_a_perfect_map_and_not_a_random_one():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 1, 16, 16), dtype=bool)
    masks[:, :, 4:8, 4:8] = True
    perfect = pixel_scores(masks.astype(float), masks)
    assert perfect["pixel_auroc"] == 1.0 and perfect["best_dice"] == pytest.approx(1.0)
    random = pixel_scores(rng.uniform(size=masks.shape), masks)
    assert 0.4 < random["pixel_auroc"] < 0.6 and random["best_dice"] < 0.3


def test_the_classifier_learns_a_separable_problem_and_reports_accuracy_and_auc():
    g = torch.Generator().manual_seed(0)

    def data(n):
        labels = torch.randint(0, 2, (n,), generator=g)
        images = torch.randn(n, 1, 16, 16, generator=g) * 0.5
        images[:, :, 4:12, 4:12] += labels.float().reshape(-1, 1, 1, 1)  # a bright square for class 1
        return images, labels

    model = train_classifier(*data(256), num_classes=2, recipe=ClassifierRecipe(epochs=4, batch_size=32))
    result = evaluate(model, *data(200))
    assert result["accuracy"] > 0.9 and result["auc"] > 0.95 and result["test_images"] == 200


def test_simplex_noise_is_standardised_smooth_and_reproducible():
    noise = simplex_noise((4, 2, 32, 32), torch.Generator().manual_seed(0))
    assert noise.shape == (4, 2, 32, 32) and torch.isfinite(noise).all()
    per_field = noise.flatten(2)
    assert torch.allclose(per_field.mean(2), torch.zeros(4, 2), atol=1e-5)
    assert torch.allclose(per_field.std(2), torch.ones(4, 2), atol=1e-4)

    def neighbour_correlation(x):
        return float(torch.corrcoef(torch.stack([x[..., :-1].reshape(-1), x[..., 1:].reshape(-1)]))[0, 1])

    assert neighbour_correlation(noise) > 0.4  # low octaves: neighbours move together
    assert abs(neighbour_correlation(draw_noise("gaussian", (4, 2, 32, 32), torch.Generator().manual_seed(0)))) < 0.1
    assert torch.equal(noise, simplex_noise((4, 2, 32, 32), torch.Generator().manual_seed(0)))
    assert not torch.equal(noise[0, 0], noise[1, 0])  # every field its own
    with pytest.raises(ValueError, match="2D"):
        simplex_noise((1, 1, 8, 8, 8))
