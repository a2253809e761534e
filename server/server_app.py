"""The Flower ServerApp: a thin wrapper that hands the Grid to ``run_federation``."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..common.run_spec import RunSpec
from .federation import run_federation
from .settings import FederationSettings


def make_server_app(spec: RunSpec, settings: FederationSettings, run_dir: str | Path, resume: bool = False) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, spec, settings, run_dir, resume)

    return app
