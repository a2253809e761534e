"""Sample-level privacy accounting with Opacus's own accountants, composable across processes and runs.

A site's whole history of DP-SGD releases is a list of ``(noise_multiplier, sample_rate, steps)`` entries, the
same list Opacus's RDP and PRV accountants keep in ``history``. Rebuilding the accountant from that list gives
exactly the epsilon one long-lived PrivacyEngine would report, even though on the deployment engine each round
runs in a new process.
"""

from __future__ import annotations

import functools
import warnings
from typing import Iterable

import numpy as np
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier

Release = tuple[float, float, int]  # noise_multiplier, sample_rate, steps


def accountant_for(history: Iterable[Release], kind: str = "rdp"):
    """A fresh Opacus accountant (``rdp`` or ``prv``) holding ``history``."""
    accountant = create_accountant(kind)
    merged: list[Release] = []
    for noise, rate, steps in ((float(s), float(q), int(n)) for s, q, n in history if int(n) > 0):
        if merged and merged[-1][:2] == (noise, rate):  # as Opacus's own step() merges repeats: same epsilon, faster
            merged[-1] = (noise, rate, merged[-1][2] + steps)
        else:
            merged.append((noise, rate, steps))
    accountant.history = merged
    return accountant


def epsilon_spent(history: Iterable[Release], delta: float, kind: str = "rdp") -> float:
    """Epsilon at ``delta`` after every release in ``history`` (0 for none)."""
    accountant = accountant_for(history, kind)
    if not accountant.history:
        return 0.0
    if kind != "rdp":
        return float(accountant.get_epsilon(delta))
    # Opacus's RDPAccountant.get_epsilon, with each (noise, rate)'s one-step RDP computed once: RDP grows linearly
    # in the steps, and a site's ledger (and the noise search) asks for the same few releases again and again
    rdp = sum(steps * np.asarray(_rdp_of_one_step(noise, rate)) for noise, rate, steps in accountant.history)
    return float(rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)[0])


@functools.lru_cache(maxsize=1024)
def _rdp_of_one_step(noise: float, rate: float) -> tuple[float, ...]:
    return tuple(rdp_analysis.compute_rdp(q=rate, noise_multiplier=noise, steps=1,
                                          orders=RDPAccountant.DEFAULT_ALPHAS))


def noise_for_run(target_epsilon: float, delta: float, sample_rate: float, steps: int, kind: str = "rdp") -> float:
    """The smallest noise multiplier that keeps a run of ``steps`` steps at ``sample_rate`` within
    (target_epsilon, delta), from Opacus's search (tolerance 0.01 in epsilon)."""
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=kind))


MAX_NOISE = 1e6  # Opacus's own limit on the search: beyond it the budget is treated as spent


def noise_within_budget(history: Iterable[Release], budget: float, delta: float, sample_rate: float, steps: int,
                        kind: str = "rdp", tolerance: float = 0.01, too_low: float = 0.0) -> float | None:
    """The smallest noise multiplier (to ``tolerance`` in epsilon, never above ``budget``) for which a run of
    ``steps`` steps at ``sample_rate``, composed after the releases in ``history``, keeps the total within
    (budget, delta); None when ``history`` leaves no more than ``tolerance`` of the budget. Opacus's search,
    seeded with the earlier releases."""
    history = list(history)

    def total(noise: float) -> float:
        with warnings.catch_warnings():  # Opacus warns of its alpha range at the search's large trial noises
            warnings.filterwarnings("ignore", "Optimal order is the largest alpha")
            return epsilon_spent(history + [(noise, sample_rate, steps)], delta, kind)

    if budget - epsilon_spent(history, delta, kind) <= tolerance:  # spent, to the search's precision
        return None
    low, high = too_low, 2 * too_low if too_low > 0 else 10.0  # too_low: a noise known to pass the budget
    while total(high) > budget:
        low, high = high, 2 * high
        if high > MAX_NOISE:
            return None
    for _ in range(100):  # halves the bracket; far below any tolerance long before the bound
        if budget - total(high) <= tolerance:
            break
        middle = (low + high) / 2
        low, high = (middle, high) if total(middle) > budget else (low, middle)
    return high


def raised_to_budget(noise: float, earlier: Iterable[Release], budget: float, delta: float, sample_rate: float,
                     steps: int, kind: str = "rdp") -> float:
    """``noise`` (a run's own, from noise_for_run), raised where ``steps`` more steps at it, composed after the
    site's ``earlier`` releases, would pass the site's lifetime ``budget``: the run then ends within the budget
    instead of being refused half way by the ledger. Where the earlier releases left no room, ``noise`` is
    returned unchanged and the ledger refuses the round."""
    earlier = list(earlier)
    if not earlier or epsilon_spent(earlier + [(noise, sample_rate, steps)], delta, kind) <= budget:
        return noise
    within = noise_within_budget(earlier, budget, delta, sample_rate, steps, kind, too_low=noise)
    return noise if within is None else max(noise, within)
