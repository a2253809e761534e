"""Non-IID splits: patients never cross sites, skew parameters really skew, channel skew removes channels."""

from __future__ import annotations

import numpy as np
import pytest

from meddiff.common.data.phantom import SCHEMA
from meddiff.common.schema import Example
from meddiff.simulations.partition import drop_channels, split_examples


def _examples(n=300, labels=2, per_patient=1):
    rng = np.random.default_rng(0)
    return [Example(image=np.zeros((5, 2, 2), np.float32), available=np.ones(5, bool),
                    label=int(rng.integers(labels)), patient=f"p{i // per_patient}") for i in range(n)]


def test_iid_split_is_balanced_and_covers_every_example_once():
    examples = _examples(301)
    parts = split_examples(examples, 3, "iid")
    assert sorted(len(p) for p in parts) == [100, 100, 101]
    assert sorted(id(e) for p in parts for e in p) == sorted(id(e) for e in examples)


def test_a_patient_never_appears_at_two_sites():
    parts = split_examples(_examples(120, per_patient=4), 4, "dirichlet", alpha=0.3)
    owners = {}
    for site, part in enumerate(parts):
        for e in part:
            assert owners.setdefault(e.patient, site) == site


def test_dirichlet_label_skew_grows_as_alpha_shrinks():
    def skew(alpha):
        parts = split_examples(_examples(600), 3, "dirichlet", alpha=alpha, seed=1)
        fractions = [np.mean([e.label for e in p]) for p in parts]
        return max(fractions) - min(fractions)
    assert skew(0.1) > skew(100.0) + 0.3
    assert skew(100.0) < 0.15


def test_quantity_skew_gives_unequal_sizes_and_every_site_something():
    sizes = [len(p) for p in split_examples(_examples(300), 5, "quantity", alpha=0.3, seed=2)]
    assert min(sizes) >= 1 and max(sizes) > 2 * min(sizes) and sum(sizes) == 300


def test_too_few_patients_or_a_wrong_split_is_refused():
    with pytest.raises(ValueError, match="cannot be split"):
        split_examples(_examples(2), 3)
    with pytest.raises(ValueError, match="split must be"):
        split_examples(_examples(10), 2, "random")


def test_channel_skew_marks_channels_unavailable_and_zeroes_them():
    examples = [Example(image=np.ones((5, 2, 2), np.float32), available=np.ones(5, bool))]
    out = drop_channels(examples, SCHEMA, ("t2", "mask"))[0]
    assert out.available.tolist() == [True, False, True, True, False]
    assert out.image[SCHEMA.index("t2")].sum() == 0 and out.image[0].sum() == 4
    with pytest.raises(ValueError, match="unknown channels"):
        drop_channels(examples, SCHEMA, ("pet",))
