"""Simulation scenarios: N virtual hospitals made from one data set, read from a TOML file.

    [scenario]   data ("phantom" or a path), sites, split, alpha, missing_channels, scanner_shift, resolution,
                 examples_per_site (phantom), holdout, threads_per_site
    [federation] rounds, local_steps, strategy, ... (server/settings.py)
    [train]      batch_size, learning_rate, ... (common/specs.py RecipeSpec)
    [model]      channels, attention_levels, schedule, ... (common/specs.py ModelSpec)
    [runtime]    the virtual sites' hardware switches (common/specs.py RuntimeSpec)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..client.site_data import SiteData, holdout_split
from ..common.config import (ConfigError, DataConfig, PrivacyConfig, build_section, data_config_from_dict,
                             read_toml)
from ..common.data.loader import load_dataset
from ..common.data.phantom import SCHEMA as PHANTOM_SCHEMA, phantom_example, site_scanner
from ..common.data.tensors import stack_examples
from ..common.data.transforms import prepare
from ..common.latent.stage import AutoencoderStage
from ..common.plan import PHANTOM_RESOLUTION
from ..common.run_spec import RunSpec, latent_run
from ..common.schema import ChannelSchema, Example
from ..common.specs import ModelSpec, RecipeSpec, RuntimeSpec, recipe_from_table
from ..server.settings import FederationSettings
from .partition import SPLITS, drop_channels, split_examples

BUILTIN = Path(__file__).parent / "scenarios"


@dataclass(frozen=True)
class ScenarioData:
    data: str = "phantom"
    sites: int = 3
    split: str = "iid"
    alpha: float = 0.5
    missing_channels: tuple = ()  # per site, e.g. [[], ["t2"], ["mask"]]
    scanner_shift: bool = True  # phantom: each site renders with its own scanner; real data: an intensity gamma
    resolution: int = PHANTOM_RESOLUTION
    examples_per_site: int = 64  # phantom only
    holdout: float = 0.1
    threads_per_site: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "missing_channels", tuple(tuple(m) for m in self.missing_channels))
        if self.split not in SPLITS:
            raise ConfigError(f"[scenario] split = {self.split!r} is not one of {list(SPLITS)}")
        if self.sites < 1:
            raise ConfigError("[scenario] sites must be >= 1")
        if self.missing_channels and len(self.missing_channels) != self.sites:
            raise ConfigError(f"[scenario] missing_channels has {len(self.missing_channels)} entries for "
                              f"{self.sites} sites; give one list per site")


@dataclass(frozen=True)
class Scenario:
    name: str
    data: ScenarioData = field(default_factory=ScenarioData)
    federation: FederationSettings = field(default_factory=FederationSettings)
    recipe: RecipeSpec = field(default_factory=RecipeSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    data_config: DataConfig = field(default_factory=DataConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # every virtual site's [privacy] choice
    source: str = ""
    autoencoder: AutoencoderStage = field(default_factory=AutoencoderStage)  # stage 1 of a latent run


SECTIONS = ("scenario", "federation", "train", "model", "runtime", "data", "privacy", "autoencoder")


def _relative_files(settings: FederationSettings, folder: Path) -> FederationSettings:
    """The model files a scenario names, relative to the scenario file (as in federation.toml)."""
    for key in ("initial_model", "autoencoder"):
        if getattr(settings, key) and not Path(getattr(settings, key)).is_absolute():
            settings = replace(settings, **{key: str(folder / getattr(settings, key))})
    return settings


def load_scenario(path: str | Path | None = None) -> Scenario:
    """A scenario file, or the built-in phantom scenario when ``path`` is None."""
    path = Path(path) if path else BUILTIN / "phantom.toml"
    if not path.is_file() and (BUILTIN / f"{path}.toml").is_file():
        path = BUILTIN / f"{path}.toml"  # a built-in scenario by name
    raw = read_toml(path, {*SECTIONS, "name"}, "scenario file not found; built-in scenarios: "
                                                f"{sorted(p.stem for p in BUILTIN.glob('*.toml'))}")
    source = str(path)
    try:
        return Scenario(
            name=str(raw.get("name", path.stem)),
            data=build_section(ScenarioData, raw.get("scenario", {}), "scenario", source),
            # virtual hospitals keep no model store: the global model is in the run directory, not delivered
            federation=_relative_files(build_section(FederationSettings, {"deliver_final": False,
                                                                         **raw.get("federation", {})},
                                                     "federation", source), path.parent),
            recipe=recipe_from_table(raw.get("train", {}), source),
            model=build_section(ModelSpec, raw.get("model", {}), "model", source),
            runtime=build_section(RuntimeSpec, raw.get("runtime", {}), "runtime", source),
            data_config=data_config_from_dict(raw.get("data", {}), source),
            privacy=build_section(PrivacyConfig, raw.get("privacy", {}), "privacy", source), source=source,
            autoencoder=build_section(AutoencoderStage, raw.get("autoencoder", {}), "autoencoder", source))
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def _gamma_shift(example: Example, schema: ChannelSchema, gamma: float) -> Example:
    """A scanner's different contrast response on normalised images ([-1, 1] -> [-1, 1])."""
    image = example.image.copy()
    for c, name in enumerate(schema.channels):
        if example.available[c] and not schema.is_mask(name):
            image[c] = 2.0 * ((image[c] + 1.0) / 2.0) ** gamma - 1.0
    return replace(example, image=image)


def _site_examples(scenario: Scenario) -> tuple[ChannelSchema, list[list[Example]], str]:
    """Prepared examples of every site (before channel skew), and where their patient ids come from."""
    d = scenario.data
    if d.data == "phantom":
        pool = [phantom_example(i, size=64, seed=d.seed) for i in range(d.sites * d.examples_per_site)]
        index = {e.patient: i for i, e in enumerate(pool)}
        parts = split_examples(pool, d.sites, d.split, d.alpha, d.seed)
        if d.scanner_shift:
            parts = [[phantom_example(index[e.patient], size=64, seed=d.seed, lesion=bool(e.label),
                                      scanner=site_scanner(site, d.seed)) for e in part]
                     for site, part in enumerate(parts)]
        schema = PHANTOM_SCHEMA
        parts = [prepare(part, schema, d.resolution, slices=False) for part in parts]
        return schema, parts, ""
    data = load_dataset(d.data, scenario.data_config)
    schema = data.schema
    ready = prepare(data.examples, schema, d.resolution, slices=scenario.data_config.slices,
                    lower=scenario.data_config.lower_percentile, upper=scenario.data_config.upper_percentile,
                    depth=scenario.data_config.depth)
    parts = split_examples(ready, d.sites, d.split, d.alpha, d.seed)
    if d.scanner_shift:
        gammas = np.random.default_rng([d.seed, 31337]).uniform(0.75, 1.35, d.sites)
        gammas[0] = 1.0
        parts = [[_gamma_shift(e, schema, float(g)) for e in part] for part, g in zip(parts, gammas)]
    return schema, parts, data.patient_ids


@lru_cache(maxsize=4)
def site_partitions(scenario: Scenario) -> tuple[ChannelSchema, tuple[SiteData, ...]]:
    """Every virtual site's data (cached per process: a simulated site process serves many rounds)."""
    schema, parts, patient_ids = _site_examples(scenario)
    sites = []
    for site, examples in enumerate(parts):
        missing = scenario.data.missing_channels[site] if scenario.data.missing_channels else ()
        tensors = stack_examples(drop_channels(examples, schema, missing), schema, bool(patient_ids))
        train, holdout = holdout_split(tensors, scenario.data.holdout, scenario.data.seed + site)
        sites.append(SiteData(f"site-{site}", train, holdout))
    return schema, tuple(sites)


def run_spec(scenario: Scenario) -> RunSpec:
    schema, _ = site_partitions(scenario)
    source = "phantom" if scenario.data.data == "phantom" else scenario.data.data
    spec = RunSpec(schema, scenario.data.resolution, scenario.model, scenario.recipe, source,
                   depth=scenario.data_config.depth)
    return latent_run(spec, scenario.federation.autoencoder, f"{scenario.source}: [federation] autoencoder")
