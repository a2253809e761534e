"""Rich progress bars for long work, with the numbers a user watches (loss, images/s)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def training_progress(total: int, *, enabled: bool = True,
                      description: str = "training") -> Iterator[Callable[[object, float], None]]:
    """Yields ``advance(loss, images_per_second)``; a no-op when disabled (daemons log instead), so a loss
    tensor on a GPU is only synchronised when someone watches."""
    if not enabled:
        yield lambda loss, rate: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.0f} img/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(description, total=total, loss=float("nan"), rate=0.0)
        yield lambda loss, rate: progress.update(task, advance=1, loss=float(loss), rate=rate)


@contextmanager
def step_progress(total: int, *, enabled: bool = True, description: str = "sampling") -> Iterator[Callable[[], None]]:
    """Yields ``advance()`` for work counted in steps (sampling)."""
    if not enabled:
        yield lambda: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn()) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.update(task, advance=1)
