"""Normalisation, slicing, padding, resizing and patient-level splits."""

from __future__ import annotations

import numpy as np
import pytest

from meddiff.common.data.phantom import phantom_dataset
from meddiff.common.data.split import split_by_patient
from meddiff.common.data.transforms import mask_values_to_labels, normalize, pad_to_square, prepare, resize, to_slices
from meddiff.common.schema import ChannelSchema, Example


def _example(image, available=None, patient="p"):
    return Example(image=image.astype(np.float32), available=np.ones(image.shape[0], bool) if available is None
                   else np.asarray(available), patient=patient, study=patient, source="test")


def test_normalize_maps_percentiles_to_unit_range_and_masks_to_labels():
    schema = ChannelSchema(("t1", "ct", "mask"), mask_labels=2)
    rng = np.random.default_rng(0)
    image = np.stack([rng.uniform(0, 3000, (32, 32)), rng.uniform(-1000, 2000, (32, 32)),
                      rng.integers(0, 3, (32, 32))])
    out = normalize(_example(image), schema)
    assert out.image[:2].min() == -1.0 and out.image[:2].max() == 1.0
    assert set(np.unique(out.image[2])) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(mask_values_to_labels(out.image[2], 2), image[2])


def test_normalize_leaves_absent_channels_at_zero_and_constant_channels_at_background():
    schema = ChannelSchema(("t1", "t2"))
    image = np.stack([np.full((8, 8), 7.0), np.arange(64.0).reshape(8, 8)])
    out = normalize(_example(image, [True, False]), schema)
    assert np.all(out.image[0] == -1.0)
    assert np.all(out.image[1] == 0.0)


def test_slices_keep_patient_and_pad_keeps_aspect_ratio():
    schema = ChannelSchema(("t1", "mask"))
    volume = _example(np.zeros((2, 3, 40, 20)), patient="patient-7")
    slices = to_slices(volume)
    assert len(slices) == 3 and all(s.patient == "patient-7" and s.image.shape == (2, 40, 20) for s in slices)
    square = pad_to_square(normalize(slices[0], schema), schema)
    assert square.image.shape == (2, 40, 40)
    assert np.all(square.image[:, :, :10] == -1.0)


def test_resize_uses_nearest_for_masks():
    schema = ChannelSchema(("t1", "mask"), mask_labels=3)
    rng = np.random.default_rng(1)
    image = np.stack([rng.normal(size=(64, 64)), rng.integers(0, 4, (64, 64))])
    out = resize(normalize(_example(image), schema), schema, 16)
    assert out.image.shape == (2, 16, 16)
    labels = mask_values_to_labels(out.image[1], 3)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    np.testing.assert_allclose(out.image[1], labels * 2 / 3 - 1, atol=1e-6)


def test_prepare_phantom_volume_to_2d_slices():
    data = phantom_dataset(2, size=24, ndim=3)
    ready = prepare(data.examples, data.schema, 16, slices=True)
    assert len(ready) == 48
    assert all(e.image.shape == (5, 16, 16) and -1 <= e.image.min() and e.image.max() <= 1 for e in ready)


def test_split_by_patient_never_splits_a_patient_and_is_deterministic():
    examples = [_example(np.zeros((1, 4, 4)), patient=f"p{i // 3}") for i in range(30)]  # 10 patients, 3 slices
    splits = split_by_patient(examples, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3)
    patients = {name: {e.patient for e in items} for name, items in splits.items()}
    assert patients["train"].isdisjoint(patients["test"]) and patients["train"].isdisjoint(patients["val"])
    assert sum(len(v) for v in splits.values()) == 30
    assert [len(patients[n]) for n in ("train", "val", "test")] == [7, 1, 2]
    again = split_by_patient(examples, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3)
    assert {n: [e.patient for e in v] for n, v in again.items()} == {n: [e.patient for e in v] for n, v in splits.items()}
    with pytest.raises(ValueError):
        split_by_patient(examples, {"train": -1.0})
