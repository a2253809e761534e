"""The exponential moving average of weights, with the usual warm-up: one formula for a site's trainer (over
steps) and the coordinator's global model (over rounds)."""

from __future__ import annotations

import torch


def ema_decay(count, maximum: float):
    """(1 + n) / (10 + n), at most ``maximum``: the decay grows from 0.1 so that a short run's average is not stuck
    at the initial weights. ``count`` is a number, or a tensor on the device (no host sync)."""
    decay = (1.0 + count) / (10.0 + count)
    return torch.clamp(decay, max=maximum) if isinstance(decay, torch.Tensor) else min(decay, maximum)


def ema_update(maximum: float):
    """``multi_avg_fn`` for ``torch.optim.swa_utils.AveragedModel``: one foreach update of all tensors, with the
    decay computed on the device from the count."""
    def average(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        d = ema_decay(num_averaged.to(device=ema_params[0].device, dtype=torch.float32), maximum)
        delta = torch._foreach_sub(params, ema_params)  # lerp by a device tensor: foreach lerp takes host scalars
        torch._foreach_mul_(delta, 1.0 - d)
        torch._foreach_add_(ema_params, delta)
    return average
