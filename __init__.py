"""meddiff: hospitals train one diffusion model together without their images leaving the building.

The repository root is the ``meddiff`` package; ``server``, ``client``, ``common``, ``privacy``,
``simulations`` and ``tasks`` are its sub-packages (see pyproject.toml).
"""

__version__ = "0.1.0"

import sys as _sys


class _MonaiHandlersWithoutMlflow:
    """MONAI's package walk imports monai.handlers, whose MLflow handler imports MLflow (and pandas) whenever it is
    installed: 1.5 s more in every process that imports MONAI (each CLI command, Ray actor and site worker), for a
    handler meddiff never uses. Only that one import is refused; meddiff's own tracking (server/tracking.py,
    client/site_tracking.py) imports MLflow as usual."""

    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            frame = _sys._getframe(1)
            while frame is not None:
                if frame.f_globals.get("__name__") == "monai.handlers.mlflow_handler":
                    raise ImportError("MLflow is not loaded for MONAI's handlers (meddiff does not use them)")
                frame = frame.f_back
        return None


if not any(isinstance(finder, _MonaiHandlersWithoutMlflow) for finder in _sys.meta_path):
    _sys.meta_path.insert(0, _MonaiHandlersWithoutMlflow())
