"""Data-parallel training at one site: several GPUs (or, in tests, CPU processes) train one model as one.

- Plain steps: every rank draws the same global batch and the same random draws (same seed, same generator), the
  network runs on the rank's slice only (``Denoiser.loss(shard=...)``), and DDP averages the gradients, so W ranks
  take the step one process would take on the whole batch (equal to float rounding). The batch size must divide
  by W.
- DP-SGD (privacy/dp_sgd.py): Opacus' distributed path. Each rank Poisson-samples its share of the privacy units
  with the site's q and clips each unit's gradient on its own; the noise (sigma * C) is added once, by rank 0,
  and the ranks' sums are added up, so the step, q and the number of steps (what the accountant counts) are those
  of one process.
- Launching: ``launch`` starts W child processes on this machine (``python -m`` this module; NCCL on CUDA,
  gloo on CPU), which meet through a file in a private temporary folder (no network port), and returns what each
  rank returned. A rank that fails ends the others (by PID) and the call raises its error.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes training one model."""

    rank: int
    world: int

    def shard(self, batch: int) -> slice:
        if batch % self.world:
            raise ValueError(f"batch_size {batch} does not divide among {self.world} processes: set [train] "
                             f"batch_size to a multiple of {self.world}")
        size = batch // self.world
        return slice(self.rank * size, (self.rank + 1) * size)


def current_ranks() -> Ranks | None:
    """The ranks of the running process group, or None when this process trains alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return Ranks(dist.get_rank(), dist.get_world_size())


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the ranks (the same number everywhere, e.g. the global batch's loss)."""
    if current_ranks() is None:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def resolve_devices(devices: tuple[str, ...] | list[str]) -> list[str]:
    """``[runtime] devices``: "all" = every CUDA device here; otherwise the listed ones ("cuda:0", "cpu", ...)."""
    if list(devices) == ["all"]:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    return list(devices)


def _rank_main(folder: Path, rank: int) -> int:
    """One rank: join the process group, run the target, leave its result (or its error) in the folder."""
    with open(folder / "job.pkl", "rb") as f:
        module, name, args, devices = pickle.load(f)
    device = torch.device(devices[rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    outcome: tuple = ("error", "did not finish")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"file://{folder}/rendezvous",
                            rank=rank, world_size=len(devices))
    try:
        outcome = ("ok", getattr(importlib.import_module(module), name)(rank, device, *args))
    except Exception as error:
        outcome = ("error", f"{type(error).__name__}: {error}")
        traceback.print_exc()
    finally:
        dist.destroy_process_group()
        with open(folder / f"rank-{rank}.pkl", "wb") as f:
            pickle.dump(outcome, f)
    return 0 if outcome[0] == "ok" else 1


def launch(devices: list[str], target: Callable, *args: Any, timeout: float = 24 * 3600.0) -> list[Any]:
    """``target(rank, device, *args)`` in one process per device; returns the ranks' results in rank order.

    ``target`` must be a module-level function (each rank imports it); ``args`` and its result must pickle. Each
    rank is a child process of this one, stopped by its PID when another fails or the call is interrupted."""
    world = len(devices)
    if world < 2:
        raise ValueError("data-parallel training needs at least 2 devices")
    with tempfile.TemporaryDirectory(prefix="meddiff-ddp-") as name:
        folder = Path(name)
        os.chmod(folder, 0o700)
        with open(folder / "job.pkl", "wb") as f:
            pickle.dump((target.__module__, target.__qualname__, args, devices), f)
        processes = [subprocess.Popen([sys.executable, "-m", __name__, str(folder), str(rank)])
                     for rank in range(world)]
        try:
            _wait_all(processes, timeout)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        outcomes = []
        for rank in range(world):
            path = folder / f"rank-{rank}.pkl"
            outcomes.append(pickle.loads(path.read_bytes()) if path.exists()
                            else ("error", f"exited with code {processes[rank].returncode}"))
    failed = [(rank, message) for rank, (status, message) in enumerate(outcomes) if status != "ok"]
    if failed:
        rank, message = failed[0]
        raise RuntimeError(f"data-parallel training failed in process {rank} of {world}: {message}")
    return [value for _, value in outcomes]


def _wait_all(processes: list[subprocess.Popen], timeout: float) -> None:
    """Until all exit; a rank that fails ends the others (they would wait for it forever)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [p.poll() for p in processes]
        if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
            return
        time.sleep(0.1)
    raise TimeoutError(f"data-parallel training did not finish within {timeout:.0f} s")


if __name__ == "__main__":
    sys.exit(_rank_main(Path(sys.argv[1]), int(sys.argv[2])))
