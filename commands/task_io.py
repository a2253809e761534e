"""What every task sub-command shares: its common options, opening the checkpoint and the site's data, and
writing outputs (arrays, a PNG panel, a metrics JSON) with a short printed table."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.table import Table

from ..common.config import ConfigError
from ..common.console import plain_console
from rich.console import Console


MODEL_HELP = ("model.pt (a `meddiff train` checkpoint or a global model); default: the newest model the coordinator "
              "delivered to this site's store (site.toml from --config, $MEDDIFF_SITE_CONFIG or ./site.toml)")


def add_common_arguments(p: argparse.ArgumentParser, *, data_required: bool = True) -> None:
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--data", required=data_required,
                   help="the site's images: a folder, .npz, or phantom (fresh draws)")
    p.add_argument("--config", help="site.toml saying how to read --data ([data] channels, DICOM rules, masks)")
    p.add_argument("--out", required=True, help="folder for the outputs, the PNG panel and the metrics JSON")
    p.add_argument("--limit", type=int, default=0, help="process only the first N examples (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")


def open_task(args: argparse.Namespace, task: str, *, resolution_divisor: int = 1, need: tuple[str, ...] = (),
              latent_ok: bool = False):
    """(loaded model, task data): the checkpoint and the site's data in its channel order, or a clear error.
    latent_ok: the task runs on latent models too (else one is refused by name)."""
    import torch
    from ..common.diffusion.loading import load_model
    from ..tasks.task_data import load_task_data

    if args.limit < 0:
        raise ConfigError("--limit must be >= 0")
    loaded = load_model(args.model, use_ema=not args.raw_weights, device=args.device, task=f"meddiff {task}",
                        latent_ok=latent_ok)
    config = site_data_config(args)
    data = load_task_data(args.data, loaded, config, task=task, need=need,
                          resolution=loaded.resolution // resolution_divisor)
    if args.limit:
        data = data.subset(torch.arange(min(args.limit, len(data))))
    return loaded, data


def newest_site_model(config: str | None) -> Path:
    """The newest model in the site's store, or a ConfigError that says how to get one."""
    import os

    from ..client.model_store import ModelStore
    from ..client.site_paths import models_dir, site_state_dir

    config = config or os.environ.get("MEDDIFF_SITE_CONFIG") or ("site.toml" if Path("site.toml").is_file() else None)
    if config is None:
        raise ConfigError("no --model given and no site.toml found (--config, $MEDDIFF_SITE_CONFIG or ./site.toml): "
                          "pass --model PATH")
    store = ModelStore(models_dir(site_state_dir(config)))
    newest = store.newest()
    if newest is None:
        raise ConfigError(f"no --model given and the model store of {config} ({store.folder}) holds no model yet: "
                          "pass --model PATH, or take part in a federated run (`meddiff site models` lists the store)")
    return newest


def site_data_config(args: argparse.Namespace):
    """How to read the site's images: --config's [data] table (any other data path of the command, e.g. a
    baseline's training pairs, is read the same way), or the defaults."""
    from ..common.config import DataConfig
    from ..common.site_config import load_site_config

    return load_site_config(args.config).data if args.config else DataConfig()


def finish(out: str | Path, result) -> int:
    """Write a task's result (``<task>.npz``, ``<task>.json``, the PNG panel) and print its table and summary."""
    paths = result.save(out)
    console = plain_console()
    if result.table is not None:
        print_table(result.table.title, result.table.header, result.table.rows, console)
    console.print(f"{result.summary}{'; ' if result.summary else ''}-> {', '.join(str(p) for p in paths)}")
    return 0


def settings_from(cls, *args, **kwargs):
    """A task's settings from command options; a value it refuses becomes a ConfigError naming it."""
    try:
        return cls(*args, **kwargs)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def print_table(title: str, header: tuple[str, ...], rows: list[tuple], console: Console | None = None) -> None:
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column == header[0] else "right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    (console or plain_console()).print(table)


def run_timed(task: str, work):
    """(work(), seconds); a ValueError from the task (settings that do not fit this model or data) becomes a
    clear ConfigError naming the sub-command."""
    start = time.perf_counter()
    try:
        result = work()
    except ValueError as error:
        raise ConfigError(f"{task}: {error}") from None
    return result, time.perf_counter() - start
