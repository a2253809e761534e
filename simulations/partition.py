"""Non-IID splits of one data set over N virtual hospitals, the heterogeneity real federations have.

Units are patients: one patient's examples never go to two sites. Label skew draws each class's patients over
the sites with Dirichlet(alpha) proportions (smaller alpha = more skew); quantity skew draws site sizes from
Dirichlet(alpha). Channel skew removes whole channels from a site (a hospital without t2, or without masks).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from ..common.schema import ChannelSchema, Example

SPLITS = ("iid", "dirichlet", "quantity")


def _patients(examples: list[Example]) -> tuple[list[str], dict[str, list[int]]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        groups[e.patient or e.study or f"example-{i}"].append(i)
    return sorted(groups), groups


def _deal(units: list[str], proportions: np.ndarray, rng: np.random.Generator) -> list[list[str]]:
    """Shuffle units and cut them by proportions; every site gets at least one unit when there are enough."""
    order = [units[i] for i in rng.permutation(len(units))]
    counts = np.floor(proportions * len(order)).astype(int)
    counts[np.argsort(-proportions)[: len(order) - counts.sum()]] += 1
    for site in np.flatnonzero(counts == 0):  # take one unit from the largest site
        if counts.max() > 1:
            counts[np.argmax(counts)] -= 1
            counts[site] += 1
    cuts = np.cumsum(counts)[:-1]
    return [list(part) for part in np.split(np.asarray(order, dtype=object), cuts)]


def split_examples(examples: list[Example], sites: int, split: str = "iid", alpha: float = 0.5,
                   seed: int = 0) -> list[list[Example]]:
    """The examples of each of ``sites`` sites. Raises ValueError if there are fewer patients than sites."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    units, groups = _patients(examples)
    if len(units) < sites:
        raise ValueError(f"{len(units)} patients cannot be split over {sites} sites")
    rng = np.random.default_rng([seed, sites, 271828])
    assigned: list[list[str]] = [[] for _ in range(sites)]
    if split == "iid":
        for site, part in enumerate(_deal(units, np.full(sites, 1.0 / sites), rng)):
            assigned[site] += part
    elif split == "quantity":
        for site, part in enumerate(_deal(units, rng.dirichlet(np.full(sites, alpha)), rng)):
            assigned[site] += part
    else:
        by_label: dict[object, list[str]] = defaultdict(list)
        for unit in units:
            by_label[examples[groups[unit][0]].label].append(unit)
        for label in sorted(by_label, key=str):
            proportions = rng.dirichlet(np.full(sites, alpha))
            for site, part in enumerate(_split_by(by_label[label], proportions, rng)):
                assigned[site] += part
        empty = [s for s in range(sites) if not assigned[s]]
        for site in empty:  # a site with no patient at all cannot train: give it one from the largest
            donor = max(range(sites), key=lambda s: len(assigned[s]))
            assigned[site].append(assigned[donor].pop())
    return [[examples[i] for unit in sorted(part) for i in groups[unit]] for part in assigned]


def _split_by(units: list[str], proportions: np.ndarray, rng: np.random.Generator) -> list[list[str]]:
    """Like _deal but sites may get nothing (label skew means some sites lack a class)."""
    order = [units[i] for i in rng.permutation(len(units))]
    cuts = (np.cumsum(proportions)[:-1] * len(order)).round().astype(int)
    return [list(part) for part in np.split(np.asarray(order, dtype=object), cuts)]


def drop_channels(examples: list[Example], schema: ChannelSchema, missing: tuple[str, ...]) -> list[Example]:
    """The site does not have these channels: mark them unavailable and zero them."""
    unknown = sorted(set(missing) - set(schema.channels))
    if unknown:
        raise ValueError(f"channel skew names unknown channels {unknown}; the schema has {list(schema.channels)}")
    if not missing:
        return examples
    indices = [schema.index(c) for c in missing]
    out = []
    for e in examples:
        image, available = e.image.copy(), e.available.copy()
        image[indices], available[indices] = 0.0, False
        out.append(replace(e, image=image, available=available))
    return out
