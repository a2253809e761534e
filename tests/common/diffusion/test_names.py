"""The torch-free name lists agree with what the implementations provide."""

import pytest

from meddiff.common.diffusion import fast_paths, names, samplers, schedules, simplex


def test_schedule_names_are_the_implemented_schedules():
    assert set(names.SCHEDULE_NAMES) == set(schedules.SCHEDULES)


def test_every_noise_name_makes_noise_and_another_is_refused():
    import torch

    for noise in names.NOISES:
        assert simplex.draw_noise(noise, (1, 1, 8, 8), torch.Generator()).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="noise must be one of"):
        simplex.draw_noise("pink", (1, 1, 8, 8), torch.Generator())


def test_switch_values_are_what_switch_on_accepts():
    for value in names.SWITCH_VALUES:
        fast_paths.switch_on(value, "cpu")
    with pytest.raises(ValueError):
        fast_paths.switch_on("sometimes", "cpu")


def test_sampler_names_are_the_implemented_samplers_in_order():
    assert names.SAMPLER_NAMES == tuple(samplers.SAMPLERS)
