"""What every task returns: its arrays, a JSON report (settings, timings, metrics), the panel's columns and a
table to print. The commands write and print it (commands/task_io.py ``finish``); benchmarks read it directly."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

Tensor = torch.Tensor


@dataclass
class Table:
    title: str
    header: tuple[str, ...]
    rows: list[tuple]


@dataclass
class TaskResult:
    """task: the file stem of the outputs (``<task>.npz``, ``<task>.json``, ``<task>.png``); arrays: saved as
    they are; report: JSON-serialisable; columns: the panel, name -> (N, H, W) in [0, 1] (names say input,
    output, baseline or reference, tasks/figures.py); table: None when there is nothing to tabulate; summary: the
    line printed after the table."""

    task: str
    arrays: dict[str, Tensor]
    report: dict
    columns: dict[str, Tensor] = field(default_factory=dict)
    table: Table | None = None
    summary: str = ""

    def save(self, folder: str | Path) -> list[Path]:
        """``<folder>/<task>.npz``, the PNG panel ``<task>.png`` and ``<task>.json``; returns their paths."""
        from .figures import panel

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = folder / f"{self.task}.npz"
        np.savez_compressed(arrays, **{k: np.asarray(v) for k, v in self.arrays.items()})
        figure = [panel(self.columns, folder / f"{self.task}.png")] if self.columns else []
        report = folder / f"{self.task}.json"
        report.write_text(json.dumps(self.report, indent=2))
        return [arrays, *figure, report]
