"""GPU fast paths for the one network: each a switch, "auto" = on for CUDA and off elsewhere.

- ``flash_attention``: MONAI's attention blocks call ``F.scaled_dot_product_attention`` (flash / memory-efficient
  kernels on CUDA) instead of materialising the (tokens x tokens) attention matrix. No weights change.
- ``channels_last``: NHWC (NDHWC in 3D) memory format, the layout cuDNN's tensor-core convolutions want.
- ``compile``: ``torch.compile`` of the network; if compilation fails the network runs eagerly and the log
  says why (:class:`CompiledWithFallback`), so a site never stops training over a compiler problem.
- ``cuda_graphs``: the sampling loop calls the network at one fixed shape; it is captured once as a CUDA graph
  and replayed each step (:class:`GraphedNetwork`), removing the per-kernel launch cost. The compiled network and
  the graphs are kept on the denoiser that made them (denoiser.py), explicitly.

All of them leave the numbers unchanged up to float rounding; tests/common/diffusion/test_fast_paths.py
states the tolerances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import torch
from torch import nn

from .names import SWITCH_VALUES

log = logging.getLogger(__name__)



def switch_on(value: str, device: torch.device | str) -> bool:
    """"auto" means on for CUDA, off on CPU (where these paths are slower, or unsupported)."""
    if value not in SWITCH_VALUES:
        raise ValueError(f"a fast-path switch must be one of {SWITCH_VALUES}, got {value!r}")
    return value == "on" or (value == "auto" and torch.device(device).type == "cuda")


@dataclass(frozen=True)
class FastPaths:
    """Which fast paths to use; each "auto" | "on" | "off". Resolve with :meth:`resolved` for a device."""

    flash_attention: str = "auto"
    channels_last: str = "auto"
    compile: str = "auto"
    cuda_graphs: str = "auto"

    def __post_init__(self) -> None:
        for f in fields(self):
            switch_on(getattr(self, f.name), "cpu")  # validates the value

    def resolved(self, device: torch.device | str) -> dict[str, bool]:
        on = {f.name: switch_on(getattr(self, f.name), device) for f in fields(self)}
        if on["cuda_graphs"] and torch.device(device).type != "cuda":
            raise ValueError("cuda_graphs = on needs a CUDA device")
        return on


def set_flash_attention(model: nn.Module, enabled: bool) -> int:
    """Switch every MONAI self-attention block of ``model`` to (or from) SDPA. Returns how many were switched."""
    count = 0
    for module in model.modules():
        if hasattr(module, "use_flash_attention") and hasattr(module, "scale"):
            if enabled and getattr(module, "save_attn", False):
                continue  # MONAI cannot save attention maps from SDPA
            module.use_flash_attention = enabled
            count += 1
    return count


def memory_format(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def apply_layout(model: nn.Module, spatial_dims: int, flash_attention: bool, channels_last: bool) -> nn.Module:
    """The in-place, weight-preserving fast paths (attention kernel and memory format) of a model."""
    set_flash_attention(model, flash_attention)
    if channels_last:
        model.to(memory_format=memory_format(spatial_dims))
    return model


class CompiledWithFallback:
    """``torch.compile(module)`` that falls back to the eager module, once and for good, if compiling fails.

    A plain callable, not a module: state_dict, EMA and checkpoints keep seeing the plain module."""

    def __init__(self, module: nn.Module, **compile_options) -> None:
        self.eager = module
        self.compiled = torch.compile(module, **compile_options)
        self.failed: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # compiler and backend errors have no common base class
                detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
                self.failed = f"{type(error).__name__}: {detail[:400]}"
                log.warning("torch.compile failed (%s); training and sampling continue eagerly", self.failed)
        return self.eager(*args, **kwargs)


class GraphedNetwork:
    """Replays one CUDA graph of ``fn(*inputs)`` for fixed input shapes (the sampling loop's).

    The graph is captured at the first call (after warm-up calls on a side stream, as CUDA requires); later calls
    copy the inputs into the captured buffers, replay, and return a copy of the output. ``None`` inputs are
    constants of the graph. Kept per model and shape by :func:`graphed`, so a task that samples many batches
    captures once."""

    WARMUP_CALLS = 2

    def __init__(self, fn) -> None:
        self.fn = fn
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple = ()
        self.static_out: torch.Tensor | None = None

    def __call__(self, *inputs):
        if self.graph is None:
            self._capture(inputs)
        for buffer, value in zip(self.static_inputs, inputs):
            if buffer is not None:
                buffer.copy_(value)
        self.graph.replay()
        return self.static_out.clone()

    def _capture(self, inputs: tuple) -> None:
        self.static_inputs = tuple(None if x is None else x.clone() for x in inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.WARMUP_CALLS):
                self.fn(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self.fn(*self.static_inputs)


def graph_key(inputs: tuple) -> tuple:
    """What a captured graph is specific to: each input's shape, dtype and device (None stays None), and
    whether bf16 autocast is on."""
    return (tuple(None if x is None else (tuple(x.shape), x.dtype, x.device) for x in inputs),
            torch.is_autocast_enabled("cuda"))


def graphed(graphs: dict, fn):
    """A callable like ``fn`` that replays a CUDA graph per input signature, the graphs kept in ``graphs`` (the
    denoiser's own dict, so a task that samples many batches captures once)."""
    def call(*inputs):
        key = (id(fn), graph_key(inputs))
        if key not in graphs:
            graphs[key] = GraphedNetwork(fn)
        return graphs[key](*inputs)
    return call
