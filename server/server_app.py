"""The Flower ServerApp: a thin wrapper that hands the Grid to ``run_stages`` (stages.py)."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..common.latent.stage import AutoencoderStage
from ..common.run_spec import RunSpec
from .stages import run_stages
from .settings import FederationSettings


def make_server_app(spec: RunSpec, settings: FederationSettings, run_dir: str | Path, resume: bool = False,
                    stage_one: AutoencoderStage = AutoencoderStage()) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_stages(grid, spec, settings, stage_one, run_dir, resume)

    return app
