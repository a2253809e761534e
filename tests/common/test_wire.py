"""Packed weights round-trip exactly and a wrong-sized vector is refused with both sizes named."""

from __future__ import annotations

import pytest
import torch

from meddiff.common.wire import WireFormatError, layout_of, pack, unpack


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"conv.weight": torch.randn(4, 2, 3, 3), "conv.bias": torch.randn(4), "scale": torch.randn(())}


def test_pack_then_unpack_is_exact_and_one_array():
    weights = _weights()
    record = pack(weights)
    assert list(record.keys()) == ["weights"] and record["weights"].numpy().shape == (4 * 2 * 9 + 4 + 1,)
    back = unpack(record, layout_of(weights))
    assert list(back) == list(weights)
    for name, value in weights.items():
        assert back[name].shape == value.shape and torch.equal(back[name], value)


def test_pack_follows_the_layout_order_not_the_dict_order():
    weights = _weights()
    layout = layout_of(weights)
    shuffled = dict(reversed(list(weights.items())))
    assert torch.equal(torch.from_numpy(pack(shuffled, layout)["weights"].numpy()),
                       torch.from_numpy(pack(weights)["weights"].numpy()))


def test_a_vector_of_the_wrong_length_or_an_unpacked_record_is_refused():
    weights = _weights()
    layout = layout_of(weights)
    short = pack({k: v for k, v in weights.items() if k != "scale"})
    with pytest.raises(WireFormatError, match="76 values, the model has 77"):
        unpack(short, layout)
    from flwr.app import ArrayRecord
    with pytest.raises(WireFormatError, match="one array named 'weights'"):
        unpack(ArrayRecord.from_torch_state_dict(weights), layout)
