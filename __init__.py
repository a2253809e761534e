"""meddiff: hospitals train one diffusion model together without their images leaving the building.

The repository root is the ``meddiff`` package; ``server``, ``client``, ``common``, ``privacy``,
``simulations`` and ``tasks`` are its sub-packages (see pyproject.toml).
"""

__version__ = "0.1.0"
