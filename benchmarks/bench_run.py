"""What the task benchmarks share: training with `meddiff train` as a site admin would (stopping on failure),
segmenting through the task library (meddiff.tasks, what `meddiff segment` runs), reading a trained model's
training record, and writing the data configs of a split."""

from __future__ import annotations

import json
from pathlib import Path

from meddiff.cli import main as meddiff


def run_meddiff(arguments: list[str]) -> None:
    code = meddiff(arguments)
    if code != 0:
        raise SystemExit(f"meddiff {' '.join(arguments)} failed with exit code {code}")


def training_record(model: Path) -> dict:
    """The train.json `meddiff train` wrote beside ``model`` (steps, seconds, ...), or {} for a model without."""
    path = Path(model).parent / "train.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_data_configs(out: Path, folders: dict[str, Path], data_lines: str) -> dict[str, Path]:
    """One site.toml per split (``OUT/<name>.toml``): ``[data] path`` = the split's folder, plus ``data_lines``."""
    configs = {}
    for name, folder in folders.items():
        configs[name] = out / f"{name}.toml"
        configs[name].write_text(f'[data]\npath = "{folder}"\n{data_lines}')
    return configs


def segment_with_baselines(model: Path, test: Path, train: Path, config: Path, out: Path, *, samples: int,
                           baseline_seconds: float, synthetic_pairs: int = 0, seed: int = 0) -> dict:
    """The diffusion ensemble on ``test`` next to the supervised UNet trained on ``train``'s real pairs (and on
    ``synthetic_pairs`` generated ones), both read with ``config``'s [data]; the outputs go to ``out``; returns
    the report (what `meddiff segment` writes as segment.json)."""
    from meddiff.common.diffusion.loading import load_model
    from meddiff.common.site_config import load_site_config
    from meddiff.tasks.segment import SegmentSettings, mask_channel, segment_task, train_unets
    from meddiff.tasks.task_data import load_task_data
    from meddiff.tasks.unet_baseline import UNetRecipe

    loaded, data_config = load_model(model, latent_ok=True), load_site_config(config).data  # segment: both
    data = load_task_data(str(test), loaded, data_config, task="segment")
    real = load_task_data(str(train), loaded, data_config, task="segment")
    index, settings = mask_channel(loaded.schema, None), SegmentSettings(samples=samples)
    recipe = UNetRecipe(seconds=baseline_seconds, seed=seed, device=str(loaded.device))
    unets = train_unets(loaded, index, real, synthetic_pairs, recipe, settings.steps, settings.batch_size, seed)
    result = segment_task(loaded, data, index, settings, unets, seed)
    result.report["model"] = str(model)
    result.save(out)
    return result.report
