"""Every task's settings refuse the same mistakes in the same words, whether a command or a library caller sets
them."""

import pytest

from meddiff.tasks.anomaly import AnomalySettings
from meddiff.tasks.denoise import DenoiseSettings
from meddiff.tasks.reconstruct import ReconstructSettings
from meddiff.tasks.segment import SegmentSettings
from meddiff.tasks.super_resolve import SuperResolveSettings
from meddiff.tasks.translate import TranslateSettings

WITH_SAMPLER = [DenoiseSettings, ReconstructSettings, SegmentSettings, SuperResolveSettings, TranslateSettings]
ALL = [AnomalySettings, *WITH_SAMPLER]


@pytest.mark.parametrize("settings", ALL, ids=lambda c: c.__name__)
def test_a_count_below_one_is_refused_by_name(settings):
    settings()  # the defaults are valid
    with pytest.raises(ValueError, match=r"must be >= 1, got batch_size = 0"):
        settings(batch_size=0)
    with pytest.raises(ValueError, match=r"got steps = -3"):
        settings(steps=-3)


@pytest.mark.parametrize("settings", WITH_SAMPLER, ids=lambda c: c.__name__)
def test_a_sampler_the_task_cannot_use_is_refused_with_the_choices(settings):
    with pytest.raises(ValueError, match=r"samplers are \['ddim', 'ddpm'.*got 'langevin'"):
        settings(sampler="langevin")
