"""federation.toml: what the coordinator runs.

    run_dir = "runs/consortium-1"
    [schema]     channels = ["t1", "t2", "mask"], class_names = [], mask_labels = 1, resolution = 64, depth (3D)
    [federation] rounds, local_steps, strategy, min_sites, initial_model, autoencoder, ... (settings.py)
    [train]      batch_size, learning_rate, ... (common/specs.py RecipeSpec: what every site trains with)
    [model]      channels, attention_levels, schedule, ... (common/specs.py ModelSpec)
    [autoencoder] widths, latent_channels, rounds, local_steps, ... (stage 1 of a latent run: common/latent/stage.py)

A site's hardware switches ([runtime]) are the site's own: a federation.toml that sets them is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..common.config import ConfigError, build_section, read_toml
from ..common.latent.stage import AutoencoderStage
from ..common.plan import DEFAULT_RESOLUTION
from ..common.run_spec import RunSpec, latent_run
from ..common.schema import ChannelSchema
from ..common.specs import ModelSpec, recipe_from_table
from .settings import FederationSettings


@dataclass(frozen=True)
class SchemaSection:
    channels: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    mask_labels: int = 1
    resolution: int = DEFAULT_RESOLUTION
    depth: int = 0  # a 3D run of anisotropic volumes: the slices they are resized to (0: as many as resolution)


@dataclass(frozen=True)
class FederationConfig:
    spec: RunSpec
    settings: FederationSettings
    run_dir: Path
    stage_one: AutoencoderStage = AutoencoderStage()  # [autoencoder]: stage 1 of a latent run (server/stages.py)


def load_federation_config(path: str | Path) -> FederationConfig:
    path = Path(path)
    raw = read_toml(path, {"run_dir", "schema", "federation", "train", "model", "runtime", "autoencoder"},
                    "federation config not found; pass the path of your federation.toml")
    source = str(path)
    if "runtime" in raw:
        raise ConfigError(f"{path}: [runtime] is each site's own choice (site.toml), not the coordinator's; "
                          "remove it from the federation config")
    schema = build_section(SchemaSection, raw.get("schema", {}), "schema", source)
    if not schema.channels:
        raise ConfigError(f"{path}: [schema] channels is required, e.g. channels = ['t1', 't2', 'mask']")
    model = build_section(ModelSpec, raw.get("model", {}), "model", source)
    if schema.depth < 0 or (schema.depth and model.spatial_dims != 3):
        raise ConfigError(f"{path}: [schema] depth = {schema.depth} is the slices of 3D volumes: give a positive "
                          "number with [model] spatial_dims = 3, or remove it")
    spec = RunSpec(ChannelSchema(schema.channels, schema.class_names, schema.mask_labels), schema.resolution,
                   model, recipe_from_table(raw.get("train", {}), source), depth=schema.depth)
    settings = build_section(FederationSettings, raw.get("federation", {}), "federation", source)
    for key in ("initial_model", "autoencoder"):  # relative to this file
        if getattr(settings, key) and not Path(getattr(settings, key)).is_absolute():
            settings = replace(settings, **{key: str(path.parent / getattr(settings, key))})
    spec = latent_run(spec, settings.autoencoder, f"{path}: [federation] autoencoder")
    run_dir = Path(raw.get("run_dir", "runs/federation"))
    if not run_dir.is_absolute():
        run_dir = path.parent / run_dir
    return FederationConfig(spec, settings, run_dir,
                            build_section(AutoencoderStage, raw.get("autoencoder", {}), "autoencoder", source))
