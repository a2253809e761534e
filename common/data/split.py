"""Splits by patient, never by slice: slices of one patient in both train and test would leak anatomy."""

from __future__ import annotations

import numpy as np

from ..schema import Example


def split_by_patient(examples: list[Example], fractions: dict[str, float], seed: int = 0) -> dict[str, list[Example]]:
    """Assign whole patients to splits with the given fractions (of patients), deterministically per seed.

    Every split with a positive fraction gets at least one patient when there are enough patients.
    """
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"fractions must be non-negative and sum to more than 0, got {fractions}")
    patients = sorted({e.patient for e in examples})
    order = np.random.default_rng(seed).permutation(len(patients))
    names = list(fractions)
    total = sum(fractions.values())
    counts = [int(round(fractions[n] / total * len(patients))) for n in names]
    for i, name in enumerate(names):  # no positive split left empty while patients remain
        if fractions[name] > 0 and counts[i] == 0 and len(patients) >= len(names):
            counts[i] = 1
    while sum(counts) > len(patients):
        counts[int(np.argmax(counts))] -= 1
    counts[int(np.argmax(counts))] += len(patients) - sum(counts)
    assignment: dict[str, str] = {}
    start = 0
    for name, count in zip(names, counts):
        for index in order[start:start + count]:
            assignment[patients[index]] = name
        start += count
    return {name: [e for e in examples if assignment[e.patient] == name] for name in names}
