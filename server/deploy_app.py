"""The ServerApp the coordinator's SuperLink runs; the run config names the federation.toml.

    flwr run . meddiff --run-config 'federation-config="/abs/federation.toml" resume=false'
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from .stages import run_stages
from .federation_config import load_federation_config

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    path = str(context.run_config.get("federation-config", ""))
    if not path:
        raise ValueError("no federation config: run with --run-config 'federation-config=\"/path/federation.toml\"'")
    config = load_federation_config(path)
    run_stages(grid, config.spec, config.settings, config.stage_one, config.run_dir,
               bool(context.run_config.get("resume", False)), run_id=str(context.run_id))
