"""Model weights on the wire: one flat float32 array instead of one array per tensor.

Why: Flower moves every array of an ArrayRecord as its own object, and on the deployment engine each object is
one HTTPS request on each of the six hops of a round trip (ServerApp -> SuperLink -> SuperNode -> ClientApp and
back). Our UNet has 183 tensors, so a round spent about 10 s per hop moving 4 MiB. Packed, a message is a few
objects. Every strategy we use (mean, median, trimmed mean, Krum, FedAdam/Yogi, norm clipping) works element by
element or on the whole vector, so packing changes no aggregate.

Both ends know the layout (names and shapes, in state-dict order) from the run spec's model; the packed vector
carries only the values, and a vector of the wrong length is refused with both lengths named.

torch is imported only by the functions that make or read tensors: the ClientApp process Flower starts for every
message handles packed vectors only and must not pay for importing torch (client/client_app.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
from flwr.app import Array, ArrayRecord

if TYPE_CHECKING:
    import torch

PACKED_KEY = "weights"

Layout = list[tuple[str, tuple[int, ...]]]


class WireFormatError(ValueError):
    """A record that is not a packed model of the expected layout."""


def layout_of(state_dict: dict[str, torch.Tensor]) -> Layout:
    """Names and shapes of a state dict, in its order."""
    return [(name, tuple(value.shape)) for name, value in state_dict.items()]


def vector_of(state_dict: dict[str, torch.Tensor], layout: Layout | None = None) -> np.ndarray:
    """``{name: tensor}`` -> one (N,) float32 vector in ``layout``'s order (default: the dict's own)."""
    import torch

    if layout is not None:
        if {name for name, _ in layout} != set(state_dict):
            raise WireFormatError("the weights to pack do not have the layout's names")
        state_dict = {name: state_dict[name] for name, _ in layout}
    flat = [value.detach().to("cpu", torch.float32).reshape(-1) for value in state_dict.values()]
    return (torch.cat(flat) if flat else torch.zeros(0)).numpy()


def pack_vector(vector: np.ndarray) -> ArrayRecord:
    """An ArrayRecord holding one packed (N,) float32 vector under ``PACKED_KEY``."""
    return ArrayRecord({PACKED_KEY: Array(np.ascontiguousarray(vector, dtype=np.float32))})


def pack(state_dict: dict[str, torch.Tensor], layout: Layout | None = None) -> ArrayRecord:
    """``{name: tensor}`` -> an ArrayRecord holding one (N,) float32 array under ``PACKED_KEY``, in ``layout``'s
    order (default: the dict's own)."""
    return pack_vector(vector_of(state_dict, layout))


def packed_vector(record: ArrayRecord) -> np.ndarray:
    """The flat vector of a packed record; raises WireFormatError for any other record."""
    if list(record.keys()) != [PACKED_KEY]:
        raise WireFormatError(f"expected one array named {PACKED_KEY!r}, got {sorted(record.keys())[:5]}")
    vector = record[PACKED_KEY].numpy()
    if vector.ndim != 1 or vector.dtype != np.float32:
        raise WireFormatError(f"packed weights must be a 1-D float32 array, got shape {vector.shape} {vector.dtype}")
    return vector


def split_vector(vector: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """A packed vector as ``{name: array}`` in ``layout`` (views into it); a wrong length is refused."""
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


def unpack_numpy(record: ArrayRecord, layout: Layout) -> dict[str, np.ndarray]:
    """The packed record as ``{name: array}`` in ``layout`` (views into one vector)."""
    return split_vector(packed_vector(record), layout)


def state_dict_of(vector: np.ndarray, layout: Layout) -> dict[str, torch.Tensor]:
    """A packed vector as a torch state dict (own memory, safe to load into a model)."""
    import torch

    return {name: torch.from_numpy(value.copy()) for name, value in split_vector(vector, layout).items()}


def unpack(record: ArrayRecord, layout: Layout) -> dict[str, torch.Tensor]:
    """The packed record as a torch state dict (own memory, safe to load into a model)."""
    return state_dict_of(packed_vector(record), layout)


# -- a reply that holds only the trained part ---------------------------------------------------------------------
# A run that fine-tunes a part of the network ([train] trainable) changes only that part: the rest of a site's reply
# would be the global model's own values, sent back. Such a reply holds the trained values alone, in layout order,
# under TRAINED_KEY; the coordinator puts them back into the global vector before anything else reads the reply.
TRAINED_KEY = "trained-weights"


def trained_mask(layout: Layout, trained: Callable[[str], bool]) -> np.ndarray:
    """(N,) bool over the packed vector: True where the parameter ``trained(name)`` is."""
    return np.concatenate([np.full(int(np.prod(shape)), trained(name), dtype=bool) for name, shape in layout]) \
        if layout else np.zeros(0, dtype=bool)


def pack_reply(vector: np.ndarray, global_size: int) -> ArrayRecord:
    """A site's new weights: the whole vector as usual, or (shorter than the global one) only the trained part."""
    if vector.size == global_size:
        return pack_vector(vector)
    return ArrayRecord({TRAINED_KEY: Array(np.ascontiguousarray(vector, dtype=np.float32))})


def expand_trained(record: ArrayRecord, global_vector: np.ndarray, mask: np.ndarray) -> ArrayRecord:
    """A reply as the whole packed vector: a trained-part reply is put back into ``global_vector`` (the frozen
    values are the global model's, which is what the site holds); any other record is returned as it is."""
    if list(record.keys()) != [TRAINED_KEY]:
        return record
    part = record[TRAINED_KEY].numpy()
    if part.ndim != 1 or part.size != int(mask.sum()):
        raise WireFormatError(f"a trained-part reply holds {part.size} values, the run trains {int(mask.sum())}: "
                              "the site runs another [train] trainable or meddiff version")
    whole = global_vector.astype(np.float32, copy=True)
    whole[mask] = part
    return pack_vector(whole)
