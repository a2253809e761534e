"""Scenario files: the built-in ones load; mistakes are refused with the key's name; real data splits by patient."""

from __future__ import annotations

from dataclasses import replace

import pytest

from meddiff.common.config import ConfigError
from meddiff.simulations.scenario import load_scenario, site_partitions
from tests.conftest import shared


def test_the_default_scenario_is_three_phantom_sites_with_channel_skew():
    scenario = load_scenario()
    assert scenario.data.sites == 3 and scenario.data.data == "phantom"
    small = replace(scenario, data=replace(scenario.data, examples_per_site=6, resolution=16))
    schema, sites = site_partitions(small)
    present = [dict(zip(schema.channels, s.train.available.any(0).tolist())) for s in sites]
    assert present[0]["t2"] and not present[1]["t2"] and not present[2]["mask"] and present[2]["t2"]


@pytest.mark.parametrize("text, message", [
    ("[scenario]\nsites = 3\nmissing_channels = [[], ['t2']]", "one list per site"),
    ("[scenario]\nsplit = 'random'", "split"),
    ("[federation]\nstrategy = 'fedsgd'", "strategy"),
    ("[federation]\nroundz = 3", "roundz"),
    ("[train]\nbatch_size = 'big'", "batch_size"),
    ("[extra]\nx = 1", "unknown section"),
])
def test_mistakes_are_refused_by_name(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_scenario(path)


def test_a_missing_scenario_lists_the_built_in_ones(tmp_path):
    with pytest.raises(ConfigError, match="phantom"):
        load_scenario(tmp_path / "none.toml")


@pytest.mark.realdata
def test_pneumonia_dirichlet_split_is_label_skewed():
    scenario = load_scenario("pneumonia")
    scenario = replace(scenario, data=replace(scenario.data, data=str(shared("medmnist/pneumoniamnist.npz"))))
    _, sites = site_partitions(scenario)
    fractions = [float(s.train.labels.float().mean()) for s in sites]
    assert max(fractions) - min(fractions) > 0.3
    assert sum(len(s.train) + len(s.holdout) for s in sites) == 4690  # the whole train split, once


def test_simulated_sites_share_the_gpus_and_ask_for_none_without_one():
    from meddiff.simulations.runner import gpu_share

    assert gpu_share(0, 3) == 0.0 and gpu_share(1, 3) == pytest.approx(1 / 3) and gpu_share(4, 2) == 1.0
