"""Where a simulation's messages go: our round lines to the console, everything Flower, Ray and Python warnings
print to the run's log file (RUN_DIR/logs/simulation.log), so the console shows progress, not pages of notices."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..server.progress import progress_log


@contextmanager
def simulation_logs(run_dir: Path, verbose_flower: bool = False) -> Iterator[Path]:
    """Route the loggers for the duration of a run; everything is restored afterwards."""
    path = Path(run_dir) / "logs" / "simulation.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_console = logging.StreamHandler(sys.stdout)
    to_console.setFormatter(logging.Formatter("%(message)s"))
    flower, warnings = logging.getLogger("flwr"), logging.getLogger("py.warnings")
    saved = (list(flower.handlers), flower.propagate, warnings.propagate, progress_log.level, progress_log.propagate)
    if not verbose_flower:
        for handler in saved[0]:
            flower.removeHandler(handler)
    flower.propagate = False
    flower.addHandler(to_file)
    logging.captureWarnings(True)
    warnings.addHandler(to_file)
    warnings.propagate = False
    progress_log.addHandler(to_console)
    progress_log.addHandler(to_file)
    progress_log.setLevel(logging.INFO)
    progress_log.propagate = False
    try:
        yield path
    finally:
        flower.removeHandler(to_file)
        for handler in saved[0]:
            if handler not in flower.handlers:
                flower.addHandler(handler)
        logging.captureWarnings(False)
        warnings.removeHandler(to_file)
        for handler in (to_console, to_file):
            progress_log.removeHandler(handler)
        flower.propagate, warnings.propagate, progress_log.propagate = saved[1], saved[2], saved[4]
        progress_log.setLevel(saved[3])
        to_file.close()
