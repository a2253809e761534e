"""Model weights on the wire: one flat float32 array instead of one array per tensor.

Why: Flower moves every array of an ArrayRecord as its own object, and on the deployment engine each object is
one HTTPS request on each of the six hops of a round trip (ServerApp -> SuperLink -> SuperNode -> ClientApp and
back). Our UNet has 183 tensors, so a round spent about 10 s per hop moving 4 MiB. Packed, a message is a few
objects. Every strategy we use (mean, median, trimmed mean, Krum, FedAdam/Yogi, norm clipping) works element by
element or on the whole vector, so packing changes no aggregate.

Both ends know the layout (names and shapes, in state-dict order) from the run spec's model; the packed vector
carries only the values, and a vector of the wrong length is refused with both lengths named.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

PACKED_KEY = "weights"

Layout = list[tuple[str, tuple[int, ...]]]


class WireFormatError(ValueError):
    """A record that is not a packed model of the expected layout."""


def layout_of(state_dict: dict[str, torch.Tensor]) -> Layout:
    """Names and shapes of a state dict, in its order."""
    return [(name, tuple(value.shape)) for name, value in state_dict.items()]


def pack(state_dict: dict[str, torch.Tensor], layout: Layout | None = None) -> ArrayRecord:
    """``{name: tensor}`` -> an ArrayRecord holding one (N,) float32 array under ``PACKED_KEY``, in ``layout``'s
    order (default: the dict's own)."""
    if layout is not None:
        if {name for name, _ in layout} != set(state_dict):
            raise WireFormatError("the weights to pack do not have the layout's names")
        state_dict = {name: state_dict[name] for name, _ in layout}
    flat = [value.detach().to("cpu", torch.float32).reshape(-1) for value in state_dict.values()]
    vector = torch.cat(flat) if flat else torch.zeros(0)
    return ArrayRecord({PACKED_KEY: Array(vector.numpy())})


def packed_vector(record: ArrayRecord) -> np.ndarray:
    """The flat vector of a packed record; raises WireFormatError for any other record."""
    if list(record.keys()) != [PACKED_KEY]:
        raise WireFormatError(f"expected one array named {PACKED_KEY!r}, got {sorted(record.keys())[:5]}")
    vector = record[PACKED_KEY].numpy()
    if vector.ndim != 1 or vector.dtype != np.float32:
        raise WireFormatError(f"packed weights must be a 1-D float32 array, got shape {vector.shape} {vector.dtype}")
    return vector


def unpack_numpy(record: ArrayRecord, layout: Layout) -> dict[str, np.ndarray]:
    """The packed record as ``{name: array}`` in ``layout`` (views into one vector)."""
    vector = packed_vector(record)
    expected = sum(int(np.prod(shape)) for _, shape in layout)
    if vector.size != expected:
        raise WireFormatError(f"packed weights hold {vector.size} values, the model has {expected}: the two ends "
                              "run different model configurations or meddiff versions")
    out, start = {}, 0
    for name, shape in layout:
        size = int(np.prod(shape))
        out[name] = vector[start:start + size].reshape(shape)
        start += size
    return out


def unpack(record: ArrayRecord, layout: Layout) -> dict[str, torch.Tensor]:
    """The packed record as a torch state dict (own memory, safe to load into a model)."""
    return {name: torch.from_numpy(value.copy()) for name, value in unpack_numpy(record, layout).items()}
