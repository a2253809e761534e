"""The checks every task's settings share (sampler, ensemble size, steps, batch), so each task refuses the same
mistakes in the same words and a library caller gets the error a command-line user gets."""

from __future__ import annotations


def check_sampling(task: str, sampler: str | None, samplers: tuple[str, ...], **counts: int) -> None:
    """``sampler`` must be one of ``samplers`` (None: the task has no choice); every count must be >= 1."""
    if sampler is not None and sampler not in samplers:
        raise ValueError(f"{task} samplers are {list(samplers)}, got {sampler!r}")
    low = [f"{name} = {value}" for name, value in counts.items() if value < 1]
    if low:
        raise ValueError(f"{task}: {', '.join(counts)} must be >= 1, got {', '.join(low)}")
